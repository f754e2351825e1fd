/*
 * nodelay.so: an LD_PRELOAD shim that sets TCP_NODELAY on every socket that
 * connect() or accept() sees. Only for run.sh's NODELAY=1 diagnostic run.
 *
 * Berkeley DB 5.3's Replication Manager leaves Nagle's algorithm on. A commit
 * goes out as several small writes; Nagle holds the later ones until the first
 * is ACKed, and the client's kernel delays that ACK (40 ms on Linux) because
 * the client has nothing to send back until it has the whole commit record.
 * So an untuned serial writer waits ~40 ms per commit whatever the disk does.
 * With this shim the same program shows what the protocol costs without that.
 *
 * Build: cc -O2 -shared -fPIC -o nodelay.so nodelay.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

/* Errors ignored on purpose: a non-TCP socket just refuses the option. */
static void
set_nodelay(int fd)
{
	int one = 1;

	if (fd >= 0)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int
connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	static int (*real)(int, const struct sockaddr *, socklen_t);

	if (real == NULL)
		real = (int (*)(int, const struct sockaddr *, socklen_t))
		    dlsym(RTLD_NEXT, "connect");
	set_nodelay(fd);
	return real(fd, addr, len);
}

int
accept(int fd, struct sockaddr *addr, socklen_t *len)
{
	static int (*real)(int, struct sockaddr *, socklen_t *);
	int conn;

	if (real == NULL)
		real = (int (*)(int, struct sockaddr *, socklen_t *))
		    dlsym(RTLD_NEXT, "accept");
	conn = real(fd, addr, len);
	set_nodelay(conn);
	return conn;
}
