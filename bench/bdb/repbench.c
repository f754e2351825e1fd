/*
 * repbench: one Berkeley DB 5.3 Replication Manager site per process, as an
 * anchor for repsim's serial quorum-commit throughput and failover figures.
 *
 *   repbench --home DIR --me HOST:PORT [--peer HOST:PORT]... --priority N
 *            [--creator] [--writes N] [--ack quorum|all|none] [--value-bytes N]
 *            [--go-file PATH] [--verbose]
 *
 * Every site prints its replication events to stderr, one line each:
 *
 *   EVENT <name> real_us=<CLOCK_REALTIME us> mono_us=<CLOCK_MONOTONIC us> [detail]
 *
 * CLOCK_REALTIME is there so that a script can compare an event with a moment
 * it took itself (bash's $EPOCHREALTIME); CLOCK_MONOTONIC is there for
 * intervals within one process. A site also prints
 *
 *   STATUS connected=<n> real_us=...
 *
 * whenever the number of remote sites it has a live connection to changes, so
 * a script can tell when the clients can reach each other (which an election
 * after the master dies needs) without reading Berkeley DB's internals.
 *
 * A site that becomes master and was given --writes N waits until the group
 * has all its members and they are connected (and, with --go-file, until that
 * file exists: the script creates it once every client has reported
 * STARTUPDONE), then commits N transactions one after another and prints one
 * JSON line to stdout. Every other site runs
 * until SIGTERM or SIGINT, then closes its environment cleanly.
 *
 * Durability is Berkeley DB's default: each commit syncs the log (no
 * DB_TXN_NOSYNC, no DB_TXN_WRITE_NOSYNC), and a client syncs its log before it
 * acknowledges, so the figures are comparable with a system that fsyncs each
 * commit.
 *
 * Build: cc -O2 -Wall -o repbench repbench.c -ldb   (Debian: libdb5.3-dev)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <db.h>

#if DB_VERSION_MAJOR < 5 || (DB_VERSION_MAJOR == 5 && DB_VERSION_MINOR < 2)
#error "repbench needs the DB_SITE replication API of Berkeley DB 5.2 or later"
#endif

#define MAX_PEERS 8

/*
 * Timeouts (Berkeley DB takes microseconds). They match repsim's defaults
 * (heartbeat every 200 ms, a master declared lost after 1 s of silence,
 * election timeout 1 s) so the failover figures compare like with like.
 * A master killed with SIGKILL closes its sockets at once, so the clients see
 * DB_EVENT_REP_CONNECT_BROKEN and start an election without waiting for the
 * heartbeat monitor; the heartbeat matters only when a master hangs.
 * Berkeley DB's own defaults are: election timeout 2 s, no heartbeats,
 * election retry 10 s, connection retry 30 s, ack timeout 1 s.
 */
#define HEARTBEAT_SEND_US      200000u  /* master: send a heartbeat every 200 ms */
#define HEARTBEAT_MONITOR_US  1000000u  /* client: master lost after 1 s of silence */
#define ELECTION_TIMEOUT_US   1000000u  /* one election round gives up after 1 s */
/*
 * Left at Berkeley DB's defaults on purpose: DB_REP_ACK_TIMEOUT (1 s; a commit
 * that has not got its acks by then raises DB_EVENT_REP_PERM_FAILED, which we
 * count), DB_REP_ELECTION_RETRY (10 s) and DB_REP_CONNECTION_RETRY (30 s). A
 * failover that needs a second election round will show the 10 s retry in its
 * figure, which is the honest untuned behaviour.
 */

/* How long a writing master waits for its peers before it gives up. */
#define PEER_WAIT_S 60
/*
 * Without --go-file, once the master sees every member connected it waits
 * this much longer: a joiner is connected before it has finished syncing, and
 * a commit made while a client is still catching up would be acknowledged by
 * the other client alone, which a quorum policy allows but which is not the
 * steady state we mean to measure. The master cannot see a client's
 * STARTUPDONE, hence --go-file for scripts that can.
 */
#define SETTLE_MS 1000

static const char *progname = "repbench";
static const char *me_str = "?";

/* Written by Berkeley DB's threads in the event callback, read by main. */
static atomic_int is_master;
static atomic_long perm_failed;

static void
die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s[%s]: ", progname, me_str);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

/* Exit with a message naming the call if a Berkeley DB call failed. */
static void
check(int ret, const char *what)
{
	if (ret != 0)
		die("%s: %s", what, db_strerror(ret));
}

static int64_t
now_us(clockid_t clock)
{
	struct timespec ts;

	/* Both clocks always exist on Linux; a failure would be a broken libc. */
	if (clock_gettime(clock, &ts) != 0)
		die("clock_gettime: %s", strerror(errno));
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void
sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/*
 * One line per event, written with a single fprintf so lines from different
 * Berkeley DB threads do not interleave (stdio locks the stream per call).
 */
static void
log_line(const char *kind, const char *name, const char *detail)
{
	fprintf(stderr, "%s %s real_us=%lld mono_us=%lld site=%s%s%s\n",
	    kind, name,
	    (long long)now_us(CLOCK_REALTIME), (long long)now_us(CLOCK_MONOTONIC),
	    me_str, detail[0] ? " " : "", detail);
}

/*
 * Berkeley DB is not re-entrant: this callback must not call back into the
 * library, so it only records and prints.
 */
static void
event_cb(DB_ENV *env, u_int32_t event, void *info)
{
	char detail[64] = "";
	const char *name;

	(void)env;
	switch (event) {
	case DB_EVENT_REP_MASTER:
		atomic_store(&is_master, 1);
		name = "REP_MASTER";
		break;
	case DB_EVENT_REP_CLIENT:
		atomic_store(&is_master, 0);
		name = "REP_CLIENT";
		break;
	case DB_EVENT_REP_STARTUPDONE:
		name = "REP_STARTUPDONE";
		break;
	case DB_EVENT_REP_PERM_FAILED:
		atomic_fetch_add(&perm_failed, 1);
		name = "REP_PERM_FAILED";
		break;
	case DB_EVENT_REP_ELECTED:
		name = "REP_ELECTED";
		break;
	case DB_EVENT_REP_NEWMASTER:
		snprintf(detail, sizeof(detail), "eid=%d", *(int *)info);
		name = "REP_NEWMASTER";
		break;
	case DB_EVENT_REP_INIT_DONE:
		name = "REP_INIT_DONE";
		break;
	case DB_EVENT_REP_ELECTION_FAILED:
		name = "REP_ELECTION_FAILED";
		break;
	case DB_EVENT_REP_MASTER_FAILURE:
		name = "REP_MASTER_FAILURE";
		break;
	case DB_EVENT_REP_DUPMASTER:
		name = "REP_DUPMASTER";
		break;
	case DB_EVENT_REP_JOIN_FAILURE:
		name = "REP_JOIN_FAILURE";
		break;
	case DB_EVENT_REP_SITE_ADDED:
		snprintf(detail, sizeof(detail), "eid=%d", *(int *)info);
		name = "REP_SITE_ADDED";
		break;
	case DB_EVENT_REP_CONNECT_ESTD:
		snprintf(detail, sizeof(detail), "eid=%d", *(int *)info);
		name = "REP_CONNECT_ESTD";
		break;
	case DB_EVENT_REP_CONNECT_BROKEN:
		snprintf(detail, sizeof(detail), "eid=%d err=%d",
		    ((DB_REPMGR_CONN_ERR *)info)->eid,
		    ((DB_REPMGR_CONN_ERR *)info)->error);
		name = "REP_CONNECT_BROKEN";
		break;
	case DB_EVENT_REP_CONNECT_TRY_FAILED:
		/* Routine while a peer is down: not worth a line. */
		return;
	case DB_EVENT_PANIC:
		name = "PANIC";
		break;
	default:
		snprintf(detail, sizeof(detail), "code=%u", (unsigned)event);
		name = "OTHER";
		break;
	}
	log_line("EVENT", name, detail);
}

static void
err_cb(const DB_ENV *env, const char *pfx, const char *msg)
{
	(void)env;
	fprintf(stderr, "%s: %s\n", pfx ? pfx : progname, msg);
}

/* Split "HOST:PORT" into a malloc'd host and a port; exits on a bad address. */
static void
parse_addr(const char *s, char **host, u_int *port)
{
	const char *colon = strrchr(s, ':');
	char *end;
	long p;

	if (colon == NULL || colon == s)
		die("address %s: expected HOST:PORT", s);
	errno = 0;
	p = strtol(colon + 1, &end, 10);
	if (errno != 0 || *end != '\0' || p <= 0 || p > 65535)
		die("address %s: bad port", s);
	if ((*host = strndup(s, (size_t)(colon - s))) == NULL)
		die("out of memory");
	*port = (u_int)p;
}

static long
parse_long(const char *opt, const char *s, long min)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min)
		die("%s %s: expected an integer >= %ld", opt, s, min);
	return v;
}

static void
usage(void)
{
	fprintf(stderr,
	    "usage: %s --home DIR --me HOST:PORT [--peer HOST:PORT]... --priority N\n"
	    "       [--creator] [--writes N] [--ack quorum|all|none] [--value-bytes N]\n"
	    "       [--go-file PATH] [--verbose]\n",
	    progname);
	exit(2);
}

/* Number of remote sites this site has a live connection to. */
static int
connected_peers(DB_ENV *env)
{
	DB_REPMGR_SITE *list;
	u_int n, i;
	int connected = 0;

	check(env->repmgr_site_list(env, &n, &list), "DB_ENV->repmgr_site_list");
	for (i = 0; i < n; i++)
		if (list[i].status == DB_REPMGR_CONNECTED)
			connected++;
	free(list);	/* One block, allocated by Berkeley DB with malloc. */
	return connected;
}

/* The group's size as this site knows it (from the membership database). */
static u_int32_t
group_size(DB_ENV *env)
{
	u_int32_t n;

	check(env->rep_get_nsites(env, &n), "DB_ENV->rep_get_nsites");
	return n;
}

static int
cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted array. */
static int64_t
percentile(const int64_t *sorted, long n, double p)
{
	long rank = (long)(p / 100.0 * (double)n + 0.999999);

	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return sorted[rank - 1];
}

/*
 * The serial writer: each transaction is begin, one put, commit; the next
 * starts only when the previous commit has returned, i.e. after the local log
 * sync and (for quorum) a client's acknowledgement or the ack timeout.
 */
static void
run_writes(DB_ENV *env, long writes, int npeers, size_t value_bytes,
    const char *go_file)
{
	DB *db;
	DB_TXN *txn;
	DBT key, data;
	int64_t *lat, deadline, t0, t1, start, end;
	long i, perm_before;
	int ret;
	char kbuf[32], *vbuf;
	double secs;

	/*
	 * Wait for the whole group: the membership database must list every
	 * site (a quorum of a one-site group needs no acks at all) and every
	 * peer must be connected.
	 */
	deadline = now_us(CLOCK_MONOTONIC) + (int64_t)PEER_WAIT_S * 1000000;
	while (group_size(env) < (u_int32_t)npeers + 1 ||
	    connected_peers(env) < npeers) {
		if (now_us(CLOCK_MONOTONIC) > deadline)
			die("peers not all joined and connected after %d s "
			    "(group size %u, connected %d of %d)", PEER_WAIT_S,
			    (unsigned)group_size(env), connected_peers(env), npeers);
		if (!atomic_load(&is_master))
			die("lost mastership while waiting for peers");
		sleep_ms(20);
	}
	log_line("STATUS", "peers_ready", "");
	if (go_file == NULL)
		sleep_ms(SETTLE_MS);
	else {
		deadline = now_us(CLOCK_MONOTONIC) + (int64_t)PEER_WAIT_S * 1000000;
		while (access(go_file, F_OK) != 0) {
			if (errno != ENOENT)
				die("%s: %s", go_file, strerror(errno));
			if (now_us(CLOCK_MONOTONIC) > deadline)
				die("%s did not appear within %d s", go_file,
				    PEER_WAIT_S);
			sleep_ms(10);
		}
		log_line("STATUS", "go", "");
	}

	check(db_create(&db, env, 0), "db_create");
	check(db->open(db, NULL, "bench.db", NULL, DB_BTREE,
	    DB_CREATE | DB_AUTO_COMMIT | DB_THREAD, 0644), "DB->open bench.db");

	if ((lat = calloc((size_t)writes, sizeof(*lat))) == NULL ||
	    (vbuf = malloc(value_bytes)) == NULL)
		die("out of memory");
	memset(vbuf, 'v', value_bytes);

	perm_before = atomic_load(&perm_failed);
	start = now_us(CLOCK_MONOTONIC);
	for (i = 0; i < writes; i++) {
		memset(&key, 0, sizeof(key));
		memset(&data, 0, sizeof(data));
		key.size = (u_int32_t)snprintf(kbuf, sizeof(kbuf), "key%09ld", i);
		key.data = kbuf;
		data.data = vbuf;
		data.size = (u_int32_t)value_bytes;

		t0 = now_us(CLOCK_MONOTONIC);
		check(env->txn_begin(env, NULL, &txn, 0), "DB_ENV->txn_begin");
		if ((ret = db->put(db, txn, &key, &data, 0)) != 0) {
			(void)txn->abort(txn);
			check(ret, "DB->put");
		}
		/*
		 * A commit returns 0 even when the acks did not come in time;
		 * that is reported as DB_EVENT_REP_PERM_FAILED, counted below.
		 */
		check(txn->commit(txn, 0), "DB_TXN->commit");
		t1 = now_us(CLOCK_MONOTONIC);
		lat[i] = t1 - t0;
	}
	end = now_us(CLOCK_MONOTONIC);

	check(db->close(db, 0), "DB->close");
	qsort(lat, (size_t)writes, sizeof(*lat), cmp_i64);
	secs = (double)(end - start) / 1e6;
	printf("{\"writes\":%ld,\"seconds\":%.3f,\"commits_per_s\":%.1f,"
	    "\"perm_failed\":%ld,\"p50_us\":%lld,\"p99_us\":%lld,\"max_us\":%lld}\n",
	    writes, secs, (double)writes / secs,
	    atomic_load(&perm_failed) - perm_before,
	    (long long)percentile(lat, writes, 50),
	    (long long)percentile(lat, writes, 99),
	    (long long)lat[writes - 1]);
	fflush(stdout);
	free(lat);
	free(vbuf);
}

int
main(int argc, char *argv[])
{
	DB_ENV *env;
	DB_SITE *site;
	char *host, *home = NULL, *me = NULL, *go_file = NULL, *peers[MAX_PEERS];
	u_int port;
	int npeers = 0, creator = 0, verbose = 0, ack = DB_REPMGR_ACKS_QUORUM;
	int i, ret, sig, last_connected = -1;
	long priority = -1, writes = 0, value_bytes = 100;
	sigset_t sigs;
	struct timespec tick = { 0, 100 * 1000000L };

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--creator") == 0) {
			creator = 1;
			continue;
		}
		if (strcmp(a, "--verbose") == 0) {
			verbose = 1;
			continue;
		}
		if (v == NULL)
			usage();
		i++;
		if (strcmp(a, "--home") == 0)
			home = argv[i];
		else if (strcmp(a, "--me") == 0)
			me = argv[i];
		else if (strcmp(a, "--peer") == 0) {
			if (npeers == MAX_PEERS)
				die("at most %d --peer", MAX_PEERS);
			peers[npeers++] = argv[i];
		} else if (strcmp(a, "--priority") == 0)
			priority = parse_long(a, v, 0);
		else if (strcmp(a, "--writes") == 0)
			writes = parse_long(a, v, 1);
		else if (strcmp(a, "--go-file") == 0)
			go_file = argv[i];
		else if (strcmp(a, "--value-bytes") == 0)
			value_bytes = parse_long(a, v, 1);
		else if (strcmp(a, "--ack") == 0) {
			if (strcmp(v, "quorum") == 0)
				ack = DB_REPMGR_ACKS_QUORUM;
			else if (strcmp(v, "all") == 0)
				ack = DB_REPMGR_ACKS_ALL;
			else if (strcmp(v, "none") == 0)
				ack = DB_REPMGR_ACKS_NONE;
			else
				die("--ack %s: expected quorum, all or none", v);
		} else
			usage();
	}
	if (home == NULL || me == NULL || priority < 0)
		usage();
	me_str = me;
	/* Check every address now, before anything is created under --home. */
	parse_addr(me, &host, &port);
	free(host);
	for (i = 0; i < npeers; i++) {
		parse_addr(peers[i], &host, &port);
		free(host);
	}
	/* Line-buffered stderr so a script tailing it sees whole lines at once. */
	setvbuf(stderr, NULL, _IOLBF, 0);

	/*
	 * Block SIGTERM/SIGINT before Berkeley DB starts its threads (they
	 * inherit the mask), so the signal is taken only by main's sigtimedwait
	 * and no library thread is interrupted mid-call.
	 */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	if (pthread_sigmask(SIG_BLOCK, &sigs, NULL) != 0)
		die("pthread_sigmask failed");

	check(db_env_create(&env, 0), "db_env_create");
	env->set_errcall(env, err_cb);
	env->set_errpfx(env, me);
	check(env->set_event_notify(env, event_cb), "DB_ENV->set_event_notify");
	if (verbose)
		check(env->set_verbose(env, DB_VERB_REPLICATION, 1),
		    "DB_ENV->set_verbose");

	check(env->open(env, home,
	    DB_CREATE | DB_RECOVER | DB_THREAD | DB_INIT_REP | DB_INIT_TXN |
	    DB_INIT_LOCK | DB_INIT_LOG | DB_INIT_MPOOL, 0), "DB_ENV->open");

	/*
	 * The local site. The creator starts the group's membership database
	 * with itself as its only member; everyone else joins through a helper
	 * and is added to that database by the master.
	 */
	parse_addr(me, &host, &port);
	check(env->repmgr_site(env, host, port, &site, 0), "DB_ENV->repmgr_site (local)");
	check(site->set_config(site, DB_LOCAL_SITE, 1), "DB_SITE->set_config DB_LOCAL_SITE");
	if (creator)
		check(site->set_config(site, DB_GROUP_CREATOR, 1),
		    "DB_SITE->set_config DB_GROUP_CREATOR");
	check(site->close(site), "DB_SITE->close (local)");
	free(host);

	/*
	 * Every peer is a bootstrap helper: a joiner asks any of them for the
	 * master. Once a site is a member it learns the group from the
	 * membership database and these entries only matter for the next join.
	 */
	for (i = 0; i < npeers; i++) {
		parse_addr(peers[i], &host, &port);
		check(env->repmgr_site(env, host, port, &site, 0),
		    "DB_ENV->repmgr_site (peer)");
		check(site->set_config(site, DB_BOOTSTRAP_HELPER, 1),
		    "DB_SITE->set_config DB_BOOTSTRAP_HELPER");
		check(site->close(site), "DB_SITE->close (peer)");
		free(host);
	}

	check(env->rep_set_priority(env, (u_int32_t)priority), "DB_ENV->rep_set_priority");
	check(env->repmgr_set_ack_policy(env, ack), "DB_ENV->repmgr_set_ack_policy");
	/* On by default; set so the benchmark does not depend on the default. */
	check(env->rep_set_config(env, DB_REPMGR_CONF_ELECTIONS, 1),
	    "DB_ENV->rep_set_config DB_REPMGR_CONF_ELECTIONS");
	check(env->rep_set_timeout(env, DB_REP_ELECTION_TIMEOUT, ELECTION_TIMEOUT_US),
	    "DB_ENV->rep_set_timeout DB_REP_ELECTION_TIMEOUT");
	check(env->rep_set_timeout(env, DB_REP_HEARTBEAT_SEND, HEARTBEAT_SEND_US),
	    "DB_ENV->rep_set_timeout DB_REP_HEARTBEAT_SEND");
	check(env->rep_set_timeout(env, DB_REP_HEARTBEAT_MONITOR, HEARTBEAT_MONITOR_US),
	    "DB_ENV->rep_set_timeout DB_REP_HEARTBEAT_MONITOR");

	log_line("STATUS", "starting", "");
	/* Three message threads: enough for a 3-site group's traffic. */
	ret = env->repmgr_start(env, 3, DB_REP_ELECTION);
	if (ret == DB_REP_UNAVAIL && !creator)
		die("DB_ENV->repmgr_start: could not join the group (%s): no "
		    "helper could reach a master, or another site's join was "
		    "under way; start the sites one at a time", db_strerror(ret));
	check(ret, "DB_ENV->repmgr_start");

	for (;;) {
		int c;

		if (writes > 0 && atomic_load(&is_master)) {
			run_writes(env, writes, npeers, (size_t)value_bytes, go_file);
			break;
		}
		c = connected_peers(env);
		if (c != last_connected) {
			char detail[32];

			snprintf(detail, sizeof(detail), "n=%d", c);
			log_line("STATUS", "connected", detail);
			last_connected = c;
		}
		/* Doubles as the main loop's 100 ms tick and the signal wait. */
		sig = sigtimedwait(&sigs, NULL, &tick);
		if (sig == SIGTERM || sig == SIGINT)
			break;
		if (sig < 0 && errno != EAGAIN && errno != EINTR)
			die("sigtimedwait: %s", strerror(errno));
	}

	log_line("STATUS", "closing", "");
	check(env->close(env, 0), "DB_ENV->close");
	return 0;
}
