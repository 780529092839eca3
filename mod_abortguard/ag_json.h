/* JSON string escaping for the status page's ?json output.
 *
 * Thread contract: pure functions over the caller's pool. */
#ifndef AG_JSON_H
#define AG_JSON_H

#include "httpd.h"

/* `s` as the body of a JSON string (without the quotes): quote, backslash
 * and control characters escaped, and '<', '>', '&' too so the text is
 * harmless if a browser renders it as HTML. Bytes that are not valid UTF-8
 * (URIs are attacker-controlled) become U+FFFD, so the document always
 * parses. NULL gives "". */
const char* ag_json_escape(apr_pool_t* p, const char* s);

#endif /* AG_JSON_H */
