/* JSON string escaping (RFC 8259 section 7), UTF-8 checked. */
#include "ag_json.h"

#include "apr_strings.h"

#include <string.h>

/* Length of the valid UTF-8 sequence at `s` (1..4), or 0 if it is not one.
 * Overlong forms, surrogates and code points past U+10FFFF are invalid. */
static int utf8_length(const unsigned char* s) {
    unsigned char c = s[0];
    int n, i;
    if (c < 0x80) {
        return 1;
    }
    n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
    if (n == 0 || c > 0xF4) {
        return 0;
    }
    for (i = 1; i < n; ++i) {
        if ((s[i] & 0xC0) != 0x80) {
            return 0; /* also stops at the terminating NUL */
        }
    }
    if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] > 0x9F) || (c == 0xF0 && s[1] < 0x90) ||
        (c == 0xF4 && s[1] > 0x8F)) {
        return 0;
    }
    return n;
}

/* Appends the escaped form of the ASCII byte `c` at `out`; returns the end. */
static char* escape_ascii(char* out, unsigned char c) {
    static const char hex[] = "0123456789abcdef";
    if (c == '"' || c == '\\') {
        *out++ = '\\';
        *out++ = (char)c;
    } else if (c < 0x20 || c == 0x7f || c == '<' || c == '>' || c == '&') {
        memcpy(out, "\\u00", 4);
        out[4] = hex[c >> 4];
        out[5] = hex[c & 0xf];
        out += 6;
    } else {
        *out++ = (char)c;
    }
    return out;
}

const char* ag_json_escape(apr_pool_t* p, const char* s) {
    const unsigned char* in = (const unsigned char*)(s != NULL ? s : "");
    /* Worst case: every byte becomes a 6-byte \uXXXX escape. */
    char* buf = apr_palloc(p, strlen((const char*)in) * 6 + 1);
    char* out = buf;

    while (*in != '\0') {
        int n = utf8_length(in);
        if (n == 1) {
            out = escape_ascii(out, *in);
        } else if (n > 1) {
            memcpy(out, in, (size_t)n);
            out += n;
        } else {
            memcpy(out, "\\ufffd", 6);
            out += 6;
            n = 1;
        }
        in += n;
    }
    *out = '\0';
    return buf;
}
