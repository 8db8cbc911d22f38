/* The benchmark's FastCGI backend: a minimal libfcgi responder. Every request gets the same
 * small response; a request body is read and discarded. libfcgi keeps the connection open
 * when the proxy sets FCGI_KEEP_CONN. Built at bench time with `cc -O2 ... -lfcgi`
 * (Debian libfcgi-dev) and run as several processes by spawn-fcgi. */
#include <fcgi_stdio.h>

int main(void) {
    static char buf[65536];
    while (FCGI_Accept() >= 0) {
        while (fread(buf, 1, sizeof buf, stdin) > 0) {
        }
        fputs("Content-Type: text/plain\r\n"
              "Content-Length: 13\r\n"
              "\r\n"
              "Hello, world\n",
              stdout);
    }
    return 0;
}
