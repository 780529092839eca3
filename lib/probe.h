// Synchronous, non-destructive checks of a client socket.
//
// Nothing here reads from the socket, not even with MSG_PEEK: under TLS the
// bytes are ciphertext, and a peek would only tell that *something* arrived.
// The kernel's own view (poll's POLLRDHUP/POLLHUP/POLLERR, the pending
// socket error) is conclusive for FIN, RST and errors, and costs one syscall.
//
// Thread contract: free functions; any thread, on an fd the caller keeps open.
#ifndef ABORTGUARD_PROBE_H
#define ABORTGUARD_PROBE_H

#include <cstdint>

#include "reason.h"

namespace abortguard {

// Why a socket reported `events` (epoll or poll flags, which agree for
// ERR/HUP/RDHUP): RST and timeouts come with an error code (or HUP, once a
// write consumed the error), a FIN alone with RDHUP only. Reads (and so
// clears) the socket's pending error.
Reason classify_socket_event(uint32_t events, int fd) noexcept;

// The same for a tunnel's socket, whose owner shuts our sending side down
// when the far end's direction ends: HUP then also comes when both sides
// closed in order, and only an error (ERR) tells a reset apart. An orderly
// end is Reason::kNone. (Once a reader consumed the reset's error, nothing
// on the socket tells it apart any more -- not even the TCP state, which is
// CLOSE either way: the tunnel's reader must report it.)
Reason classify_tunnel_event(uint32_t events, int fd) noexcept;

// Reason::kNone while the peer is still there. With `ignore_half_close`, a
// FIN alone counts as still there; with `tunnel` (implies it), as above.
Reason probe_socket(int fd, bool ignore_half_close, bool tunnel = false) noexcept;

}  // namespace abortguard

#endif  // ABORTGUARD_PROBE_H
