/* The public C API (mod_abortguard.h): the optional functions' bodies. */
#ifndef AG_API_H
#define AG_API_H

/* Registers the optional functions; from register_hooks. */
void ag_api_register(void);

#endif /* AG_API_H */
