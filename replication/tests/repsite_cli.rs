//! The `repsite` binary as an operator uses it: three `repsite run` processes on loopback with
//! their own data directories, driven through `status`, `put` and `get`; configuration mistakes;
//! the replica tool; the benchmark. Every spawned site is killed when its test ends, pass or fail.

use replication::log::{LogRecord, RecordBody, Snapshot, Txn};
use replication::storage::{read_to_end, replay, FileStorage, Meta, Storage};
use serde_json::Value;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const REPSITE: &str = env!("CARGO_BIN_EXE_repsite");

fn repsite(args: &[&str]) -> Output {
    Command::new(REPSITE)
        .args(args)
        .output()
        .expect("repsite runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Loopback ports the system just handed out (released before the sites bind them).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("loopback bind"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// One `repsite run` process.
struct Site {
    child: Child,
    addr: String,
    admin: String,
    data_dir: PathBuf,
    stderr: PathBuf,
    config: PathBuf,
}

/// Starts `repsite run` on a configuration file, its standard error to `stderr`.
fn spawn_site(config: &Path, stderr: &Path) -> Child {
    Command::new(REPSITE)
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(stderr)
                .unwrap(),
        )
        .spawn()
        .expect("repsite run starts")
}

/// A group of running sites; killed on drop, so a failing test leaves no process behind.
struct Group {
    sites: Vec<Site>,
    /// Kept for the group's lifetime: the sites' configuration and data live here.
    _dir: tempfile::TempDir,
}

impl Drop for Group {
    fn drop(&mut self) {
        for site in &mut self.sites {
            let _ = site.child.kill();
            let _ = site.child.wait();
        }
    }
}

impl Group {
    /// Starts `n` sites of one static group with quick timers.
    fn start(n: usize) -> Group {
        Group::start_with(n, "")
    }

    /// [`Group::start`] with `extra` lines in every site's configuration (relative paths in
    /// them are the group directory's).
    fn start_with(n: usize, extra: &str) -> Group {
        let dir = tempfile::tempdir().unwrap();
        let ports = free_ports(2 * n);
        let addrs: Vec<String> = ports[..n]
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let list = addrs
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut sites = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let admin = format!("127.0.0.1:{}", ports[n + i]);
            let config = dir.path().join(format!("site{i}.toml"));
            fs::write(
                &config,
                format!(
                    "addr = {addr:?}\nadmin = {admin:?}\ngroup = \"cli-test\"\n\
                     secret = \"s3cret\"\ndata_dir = \"site{i}\"\nsites = [{list}]\n{extra}\
                     [timeouts]\nheartbeat_interval_ms = 100\nheartbeat_timeout_ms = 600\n\
                     election_timeout_ms = 400\nelection_jitter_ms = 300\n"
                ),
            )
            .unwrap();
            let stderr = dir.path().join(format!("site{i}.stderr"));
            let child = spawn_site(&config, &stderr);
            sites.push(Site {
                child,
                addr: addr.clone(),
                admin,
                data_dir: dir.path().join(format!("site{i}")),
                stderr,
                config,
            });
        }
        Group { sites, _dir: dir }
    }

    /// Every site's standard error so far, for failure messages.
    fn logs(&self) -> String {
        self.sites
            .iter()
            .map(|s| {
                format!(
                    "--- {} ---\n{}",
                    s.addr,
                    fs::read_to_string(&s.stderr).unwrap_or_default()
                )
            })
            .collect()
    }

    /// Waits until one site is master and every site names it; returns its index.
    fn wait_for_master(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let masters: Vec<Option<String>> = self
                .sites
                .iter()
                .map(|s| status_json(&s.admin).and_then(|v| v["master"].as_str().map(String::from)))
                .collect();
            if let Some(Some(master)) = masters.first() {
                if masters.iter().all(|m| m.as_deref() == Some(master)) {
                    if let Some(i) = self.sites.iter().position(|s| &s.addr == master) {
                        let role = status_json(&self.sites[i].admin).map(|v| v["role"].clone());
                        if role == Some(Value::from("master")) {
                            return i;
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "no master followed by every site within 30 s\n{}",
            self.logs()
        );
    }
}

/// `repsite status --json`, parsed; `None` while the site does not answer.
fn status_json(admin: &str) -> Option<Value> {
    let out = repsite(&["status", "--admin", admin, "--json", "--timeout", "2"]);
    if !out.status.success() {
        return None;
    }
    let response: Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(response["status"].clone())
}

/// Sends `signal` (`INT` or `TERM`) and waits for the process to exit.
fn terminate(site: &mut Site, signal: &str) -> std::process::ExitStatus {
    let killed = Command::new("kill")
        .args([&format!("-{signal}"), &site.child.id().to_string()])
        .status()
        .expect("the kill command runs");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = site.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not stop on SIG{signal}",
            site.addr
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn three_sites_elect_a_master_replicate_a_put_and_refuse_writes_on_clients() {
    let mut group = Group::start(3);
    let m = group.wait_for_master();
    let master = &group.sites[m];
    let client = &group.sites[(m + 1) % 3];

    let put = repsite(&["put", "colour", "blue", "--admin", &master.admin]);
    assert!(
        put.status.success(),
        "{}\n{}",
        text(&put.stderr),
        group.logs()
    );
    let put_out = text(&put.stdout);
    assert!(put_out.starts_with("committed at LSN "), "{put_out}");

    // The value arrives on every client.
    for site in &group.sites {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let get = repsite(&["get", "colour", "--admin", &site.admin]);
            if get.status.success() {
                assert_eq!(text(&get.stdout).trim(), "blue");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the value never reached {}: {}",
                site.addr,
                text(&get.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // A client refuses writes and names the master.
    let refused = repsite(&["put", "colour", "red", "--admin", &client.admin]);
    assert_eq!(refused.status.code(), Some(1));
    let why = text(&refused.stderr);
    assert!(
        why.contains("not master") && why.contains(&master.addr),
        "{why}"
    );
    let json = repsite(&["put", "colour", "red", "--admin", &client.admin, "--json"]);
    assert_eq!(json.status.code(), Some(1));
    let response: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(response["error"]["kind"], "not_master");
    assert_eq!(response["error"]["master"], master.addr.as_str());

    // A missing key fails; the human status tells the role and the membership.
    let missing = repsite(&["get", "shape", "--admin", &client.admin]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("not found"));
    let status = repsite(&["status", "--admin", &client.admin]);
    assert!(status.status.success());
    let status = text(&status.stdout);
    assert!(status.contains("role        client"), "{status}");
    assert!(
        status.contains(&format!("master      {}", master.addr)),
        "{status}"
    );
    for site in &group.sites {
        assert!(status.contains(&site.addr), "{status}");
    }

    // A malformed admin request is answered, counted, and the connection stays usable.
    let stream = TcpStream::connect(&master.admin).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    (&stream).write_all(b"{ this is not json\n").unwrap();
    reader.read_line(&mut line).unwrap();
    let bad: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(bad["ok"], false);
    assert_eq!(bad["error"]["kind"], "bad_request");
    line.clear();
    (&stream)
        .write_all(b"{\"op\":\"get\",\"key\":\"colour\"}\n")
        .unwrap();
    reader.read_line(&mut line).unwrap();
    let good: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(good["value"], "blue");
    let counters = status_json(&master.admin).unwrap();
    assert_eq!(counters["admin"]["bad_requests"], 1);
    assert_eq!(counters["connected"].as_array().map(Vec::len), Some(2));

    // SIGINT (ctrl-c) or SIGTERM stops a site cleanly, its storage synced with the write in it.
    for (i, site) in group.sites.iter_mut().enumerate() {
        let signal = if i == 0 { "INT" } else { "TERM" };
        let status = terminate(site, signal);
        assert!(
            status.success(),
            "{} exited {status}\n{}",
            site.addr,
            group_logs(site)
        );
        let log = group_logs(site);
        assert!(log.contains("storage synced; stopped"), "{log}");
        assert!(log.contains(&format!("signal=\"SIG{signal}\"")), "{log}");
        let (mut storage, recovery) = FileStorage::open(&site.data_dir).unwrap();
        assert_eq!(recovery.dropped_records, 0, "{}", site.addr);
        let db = replay(&mut storage).unwrap().db;
        assert_eq!(db.get(b"colour"), Some(&b"blue"[..]), "{}", site.addr);
        assert!(
            !group_logs(site).contains('\u{1b}'),
            "no terminal colours in a redirected log"
        );
        let messages = fs::read_to_string(site.data_dir.join("messages.log")).unwrap();
        assert!(
            messages.contains("BecameClient"),
            "the message log: {messages}"
        );
    }
    drop(group);
}

#[test]
fn check_passes_when_every_site_agrees_and_names_a_site_whose_data_was_damaged() {
    let mut group = Group::start(3);
    let m = group.wait_for_master();
    for i in 0..6 {
        let out = repsite(&[
            "put",
            &format!("k{i}"),
            &format!("v{i}"),
            "--admin",
            &group.sites[m].admin,
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let admins = group
        .sites
        .iter()
        .map(|s| s.admin.clone())
        .collect::<Vec<_>>()
        .join(",");
    let out = repsite(&["check", "--admin", &admins]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("every site agrees"),
        "{}",
        text(&out.stdout)
    );
    // Through one site, the group is found: every site told its peers its admin address.
    let out = repsite(&["check", "--admin", &group.sites[(m + 1) % 3].admin]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("found 3 sites through"),
        "{}",
        text(&out.stdout)
    );

    // A reader that goes away (`repsite status | head -1`) ends the command quietly.
    let mut status = Command::new(REPSITE)
        .args(["status", "--admin", &group.sites[m].admin])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(status.stdout.take());
    let out = status.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );

    // Damage a client's data while it is stopped, in a way replication cannot see: one record
    // in the middle of its log says something else, with a checksum to match.
    let c = (m + 1) % 3;
    assert!(terminate(&mut group.sites[c], "TERM").success());
    {
        let (mut storage, _) = FileStorage::open(&group.sites[c].data_dir).unwrap();
        let first = storage.first_lsn();
        let records = read_to_end(&mut storage, first).unwrap();
        let victim = records
            .iter()
            .rposition(|r| matches!(r.body, RecordBody::Txn(_)))
            .expect("a transaction in the log");
        let r = &records[victim];
        let forged = LogRecord::new(r.lsn, r.gen, RecordBody::Txn(Txn::put("k0", "forged")));
        storage.truncate_after(r.lsn - 1).unwrap();
        let mut rest = vec![forged];
        rest.extend_from_slice(&records[victim + 1..]);
        storage.append(&rest).unwrap();
        storage.sync().unwrap();
    }
    let site = &mut group.sites[c];
    site.child = spawn_site(&site.config, &site.stderr);
    let deadline = Instant::now() + Duration::from_secs(30);
    while status_json(&group.sites[c].admin).is_none() {
        assert!(Instant::now() < deadline, "{}", group.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = repsite(&["check", "--admin", &admins]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let damaged = &group.sites[c].admin;
    assert!(
        text(&out.stderr).contains(damaged.as_str()),
        "{}",
        text(&out.stderr)
    );
    for (i, s) in group.sites.iter().enumerate() {
        let named = text(&out.stderr).contains(s.admin.as_str());
        assert_eq!(named, i == c, "{}", text(&out.stdout));
    }
}

fn group_logs(site: &Site) -> String {
    fs::read_to_string(&site.stderr).unwrap_or_default()
}

/// Runs `repsite run` on a configuration and returns its exit code and standard error.
fn run_config(dir: &Path, name: &str, contents: Option<&str>) -> (Option<i32>, String) {
    let path = dir.join(name);
    if let Some(contents) = contents {
        fs::write(&path, contents).unwrap();
    }
    let out = repsite(&["run", "--config", path.to_str().unwrap()]);
    (out.status.code(), text(&out.stderr))
}

const GOOD_CONFIG: &str = "addr = \"127.0.0.1:1\"\nadmin = \"127.0.0.1:2\"\ngroup = \"g\"\n\
                           secret = \"s\"\ndata_dir = \"d\"\ngroup_creator = true\n\
                           ack_policy = \"quorum\"\n";

#[test]
fn config_errors_exit_2_naming_the_file_the_line_and_the_expectation() {
    let dir = tempfile::tempdir().unwrap();

    let (code, err) = run_config(dir.path(), "missing.toml", None);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("missing.toml") && err.contains("cannot read"),
        "{err}"
    );
    assert!(err.contains("expected a TOML file"), "{err}");

    let syntax = GOOD_CONFIG.replace("group = \"g\"", "group \"g\"");
    let (code, err) = run_config(dir.path(), "syntax.toml", Some(&syntax));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("syntax.toml:3:"), "{err}");
    assert!(err.contains("expected `=`"), "{err}");

    let unknown = GOOD_CONFIG.replace("group_creator = true", "group_creator = true\nprio = 1");
    let (code, err) = run_config(dir.path(), "unknown.toml", Some(&unknown));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("unknown.toml:7:"), "{err}");
    assert!(
        err.contains("unknown field `prio`, expected one of"),
        "{err}"
    );

    let policy = GOOD_CONFIG.replace("\"quorum\"", "\"majority\"");
    let (code, err) = run_config(dir.path(), "policy.toml", Some(&policy));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("policy.toml:7:"), "{err}");
    assert!(
        err.contains("unknown ack policy \"majority\"") && err.contains("one_peer"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_site_that_cannot_start_exits_1_saying_why_and_rust_log_filters_its_logs() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = taken.local_addr().unwrap().to_string();
    let site = format!("127.0.0.1:{}", free_ports(1)[0]);
    let config = dir.path().join("site.toml");
    fs::write(
        &config,
        format!(
            "addr = {site:?}\nadmin = {admin:?}\ngroup = \"g\"\nsecret = \"s\"\n\
             data_dir = \"data\"\ngroup_creator = true\n"
        ),
    )
    .unwrap();
    let run = |rust_log: &str| {
        let out = Command::new(REPSITE)
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", rust_log)
            .output()
            .unwrap();
        (out.status.code(), text(&out.stderr))
    };
    let (code, err) = run("info");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot listen on the admin address {admin}")),
        "{err}"
    );
    assert!(err.contains("opening the data directory"), "{err}");
    let (code, err) = run("error");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        !err.contains("opening the data directory"),
        "RUST_LOG=error: {err}"
    );
    assert!(err.contains("cannot listen on the admin address"), "{err}");
    drop(taken);
}

#[test]
fn client_commands_fail_with_exit_1_when_the_site_is_unreachable_and_2_on_misuse() {
    let port = free_ports(1)[0];
    let admin = format!("127.0.0.1:{port}");
    let out = repsite(&["status", "--admin", &admin, "--timeout", "2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&admin), "{}", text(&out.stderr));
    let out = repsite(&["put", "k"]);
    assert_eq!(out.status.code(), Some(2), "usage error");
}

fn rec(lsn: u64) -> LogRecord {
    LogRecord::new(
        lsn,
        1,
        RecordBody::Txn(Txn::put(format!("key{lsn}"), format!("value{lsn}"))),
    )
}

fn append(storage: &mut FileStorage, lsns: std::ops::RangeInclusive<u64>) {
    storage.append(&lsns.map(rec).collect::<Vec<_>>()).unwrap();
    storage.sync().unwrap();
}

/// Everything a storage directory holds, read through `FileStorage`.
fn contents(dir: &Path) -> (Snapshot, Vec<LogRecord>, Option<Meta>) {
    let (mut s, recovery) = FileStorage::open(dir).unwrap();
    assert_eq!(recovery.dropped_records, 0);
    view(&mut s)
}

/// What an open storage holds (its directory is locked while it is open).
fn view(s: &mut FileStorage) -> (Snapshot, Vec<LogRecord>, Option<Meta>) {
    let first = s.first_lsn();
    (
        replay(s).unwrap(),
        read_to_end(s, first).unwrap(),
        s.read_meta().unwrap(),
    )
}

/// `repsite replica -v`, asserting success; the lines it printed.
fn replica(from: &Path, to: &Path) -> Vec<String> {
    let out = Command::new(REPSITE)
        .args(["replica", "-v", "--from"])
        .arg(from)
        .arg("--to")
        .arg(to)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).lines().map(String::from).collect()
}

#[test]
fn replica_copies_incrementally_and_verify_catches_a_corrupted_backup() {
    let root = tempfile::tempdir().unwrap();
    let (src, bk) = (root.path().join("site"), root.path().join("backup"));
    let (mut storage, _) = FileStorage::open(&src).unwrap();
    append(&mut storage, 1..=20);
    storage
        .write_meta(&Meta {
            gen: 1,
            ..Meta::default()
        })
        .unwrap();

    let first = replica(&src, &bk);
    let has = |lines: &[String], start: &str| lines.iter().any(|l| l.starts_with(start));
    assert!(has(&first, "meta: copied"), "{first:?}");
    assert!(has(&first, "log.0: copied"), "{first:?}");
    assert!(
        first.last().unwrap().starts_with("Replica complete"),
        "{first:?}"
    );
    assert_eq!(contents(&bk), view(&mut storage));

    // New records: only they are copied.
    append(&mut storage, 21..=25);
    let second = replica(&src, &bk);
    assert!(
        has(&second, "log.0: appended 5 records (LSN 21..=25)"),
        "{second:?}"
    );
    assert!(
        second.contains(&"meta: unchanged".to_string()),
        "{second:?}"
    );
    assert!(
        second.contains(&"snapshot: unchanged".to_string()),
        "{second:?}"
    );
    assert_eq!(contents(&bk), view(&mut storage));

    // Archiving starts a new log file: that file and the snapshot are copied, nothing else.
    let mut snapshot = Snapshot::default();
    for r in (1..=15).map(rec) {
        snapshot.history.note_append(&r);
        snapshot.db.apply(&r);
    }
    storage.write_snapshot(&snapshot, true).unwrap();
    let third = replica(&src, &bk);
    let written: Vec<_> = third
        .iter()
        .filter(|l| l.contains(": copied") || l.contains(": appended"))
        .collect();
    assert_eq!(written.len(), 2, "{third:?}");
    assert!(written[0].starts_with("log.1: copied") && written[0].contains("10 records"));
    assert!(written[1].starts_with("snapshot: copied"));
    assert!(
        third.contains(&"log.0: removed (no longer current)".to_string()),
        "{third:?}"
    );
    assert!(third.contains(&"meta: unchanged".to_string()), "{third:?}");
    drop(storage);
    assert_eq!(contents(&bk), contents(&src));

    let verify = Command::new(REPSITE)
        .args(["replica", "--verify", "--to"])
        .arg(&bk)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", text(&verify.stderr));
    assert!(
        text(&verify.stdout).contains("10 records up to LSN 25"),
        "{}",
        text(&verify.stdout)
    );

    // Damage one byte of a record in the backup: --verify fails and names the file.
    let log = bk.join("log.1");
    let mut bytes = fs::read(&log).unwrap();
    let at = bytes.len() - 5;
    bytes[at] ^= 0x40;
    fs::write(&log, bytes).unwrap();
    let verify = Command::new(REPSITE)
        .args(["replica", "--verify", "--to"])
        .arg(&bk)
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(1));
    let err = text(&verify.stderr);
    assert!(err.contains(&log.display().to_string()), "{err}");
    assert!(err.contains("LSN 25"), "{err}");
}

#[test]
fn a_site_with_an_admin_token_does_nothing_for_a_request_without_it() {
    let tokens = tempfile::tempdir().unwrap();
    let (token, wrong) = (tokens.path().join("token"), tokens.path().join("wrong"));
    fs::write(&token, "t0ken-xyz\n").unwrap();
    fs::write(&wrong, "t0ken-xyZ").unwrap();
    let group = Group::start_with(
        1,
        &format!("admin_token_file = {:?}\n", token.display().to_string()),
    );
    let admin = group.sites[0].admin.clone();
    let run = |args: &[&str], token: Option<&Path>| {
        let mut command = Command::new(REPSITE);
        command
            .args(args)
            .args(["--admin", &admin, "--timeout", "5"]);
        if let Some(file) = token {
            command.arg("--token-file").arg(file);
        }
        let out = command.output().unwrap();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !run(&["status"], Some(&token))
        .1
        .contains("role        master")
    {
        assert!(Instant::now() < deadline, "no master\n{}", group.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Without the token, or with a wrong one: refused, and nothing done.
    for file in [None, Some(wrong.as_path())] {
        let (code, _, err) = run(&["put", "k", "v"], file);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("unauthorized"), "{err}");
    }
    let (code, _, err) = run(&["status"], None);
    assert_eq!(code, Some(1));
    assert!(err.contains("unauthorized"), "{err}");
    let (code, _, _) = run(&["get", "k"], Some(&token));
    assert_eq!(code, Some(1), "the refused put wrote nothing");
    // With it, from the flag or from the environment.
    let (code, out, err) = run(&["put", "k", "v"], Some(&token));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("committed at LSN"), "{out}");
    let out = Command::new(REPSITE)
        .args(["get", "k", "--admin", &admin])
        .env("REPSITE_ADMIN_TOKEN_FILE", &token)
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout).trim(), "v", "{}", text(&out.stderr));
    let (_, json, _) = run(&["status", "--json"], Some(&token));
    let status: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(status["status"]["admin"]["unauthorized"], 3, "{json}");
}

/// A CA and, for each name, a certificate it signed for 127.0.0.1: written as `ca.pem`,
/// `NAME.pem` and `NAME.key` in `dir`.
fn certificates(dir: &Path, names: &[&str]) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    for name in names {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

#[test]
fn sites_speak_tls_with_the_groups_ca_and_refuse_a_rogue_certificate() {
    let pki = tempfile::tempdir().unwrap();
    certificates(pki.path(), &["site"]);
    let rogue_pki = tempfile::tempdir().unwrap();
    certificates(rogue_pki.path(), &["site"]);
    let tls = |dir: &Path| {
        format!(
            "[tls]\ncert = {:?}\nkey = {:?}\nca = {:?}\n",
            dir.join("site.pem").display().to_string(),
            dir.join("site.key").display().to_string(),
            dir.join("ca.pem").display().to_string()
        )
    };
    // Three sites of one CA (one certificate for 127.0.0.1 serves them all)...
    let group = Group::start_with(3, &tls(pki.path()));
    let m = group.wait_for_master();
    let put = repsite(&["put", "colour", "blue", "--admin", &group.sites[m].admin]);
    assert!(
        put.status.success(),
        "{}\n{}",
        text(&put.stderr),
        group.logs()
    );
    for site in &group.sites {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let get = repsite(&["get", "colour", "--admin", &site.admin]);
            if get.status.success() {
                assert_eq!(text(&get.stdout).trim(), "blue");
                break;
            }
            assert!(Instant::now() < deadline, "never replicated over TLS");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert!(!group.logs().contains("not encrypted"), "{}", group.logs());
    // ...and a site with the group's secret and addresses but another CA's certificate: it
    // never gets a connection, and the group counts its attempts as refused handshakes.
    let ports = free_ports(2);
    let rogue_dir = tempfile::tempdir().unwrap();
    let config = rogue_dir.path().join("rogue.toml");
    let addrs: Vec<String> = group
        .sites
        .iter()
        .map(|s| format!("{:?}", s.addr))
        .collect();
    fs::write(
        &config,
        format!(
            "addr = \"127.0.0.1:{}\"\nadmin = \"127.0.0.1:{}\"\ngroup = \"cli-test\"\n\
             secret = \"s3cret\"\ndata_dir = \"data\"\nsites = [{}, \"127.0.0.1:{}\"]\n{}",
            ports[0],
            ports[1],
            addrs.join(", "),
            ports[0],
            tls(rogue_pki.path())
        ),
    )
    .unwrap();
    let mut rogue = spawn_site(&config, &rogue_dir.path().join("rogue.stderr"));
    let deadline = Instant::now() + Duration::from_secs(15);
    let refused = loop {
        let refused: u64 = group
            .sites
            .iter()
            .filter_map(|s| status_json(&s.admin))
            .map(|s| s["stats"]["handshakes_refused"].as_u64().unwrap_or(0))
            .sum();
        if refused > 0 || Instant::now() > deadline {
            break refused;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let rogue_status = status_json(&format!("127.0.0.1:{}", ports[1]));
    let _ = rogue.kill();
    let _ = rogue.wait();
    assert!(
        refused > 0,
        "no refused handshake counted\n{}",
        group.logs()
    );
    let rogue_status = rogue_status.expect("the rogue runs");
    assert_eq!(
        rogue_status["connected"],
        Value::Array(vec![]),
        "{rogue_status}"
    );
    let log = fs::read_to_string(rogue_dir.path().join("rogue.stderr")).unwrap();
    assert!(log.contains("TLS"), "{log}");
}

/// `GET path` on `addr`: the status line and the body.
fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

#[test]
fn a_running_site_serves_its_metrics_to_a_scraper() {
    let metrics = format!("127.0.0.1:{}", free_ports(1)[0]);
    let group = Group::start_with(1, &format!("metrics = {metrics:?}\n"));
    group.wait_for_master();
    let admin = &group.sites[0].admin;
    for i in 0..3 {
        let out = repsite(&["put", &format!("k{i}"), "v", "--admin", admin]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let (status, body) = http_get(&metrics, "/metrics");
    assert!(status.contains("200"), "{status}\n{body}");
    let value = |name: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{body}"))
    };
    assert_eq!(value("repsite_role{role=\"master\"}"), 1.0);
    assert_eq!(value("repsite_role{role=\"client\"}"), 0.0);
    assert!(value("repsite_generation") >= 1.0);
    assert!(value("repsite_commits_total") >= 3.0);
    assert!(value("repsite_last_lsn") >= 3.0);
    assert_eq!(value("repsite_commit_latency_seconds_count"), 3.0);
    assert_eq!(value("repsite_perm_failed_total"), 0.0);
    let (status, _) = http_get(&metrics, "/other");
    assert!(status.contains("404"), "{status}");
    // Without a [tls] table the site says, once, that its replication traffic is in the clear.
    assert_eq!(
        group.logs().matches("not encrypted").count(),
        1,
        "{}",
        group.logs()
    );
}

/// `repsite replica -v --from-site ADMIN --to DIR`: its exit code, output lines and stderr.
fn replica_from_site(admin: &str, to: &Path) -> (Option<i32>, Vec<String>, String) {
    let out = Command::new(REPSITE)
        .args(["replica", "-v", "--from-site", admin, "--to"])
        .arg(to)
        .output()
        .unwrap();
    let lines = text(&out.stdout).lines().map(String::from).collect();
    (out.status.code(), lines, text(&out.stderr))
}

/// What the summary line says was read from the source.
fn bytes_read(lines: &[String]) -> u64 {
    let summary = lines.last().expect("a summary line");
    let before = summary
        .split(" bytes read from the source")
        .next()
        .unwrap_or_default();
    before
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {summary:?}"))
}

/// The bytes an `appended` or `copied` line says were written.
fn bytes_written(lines: &[String], file: &str) -> u64 {
    let line = lines
        .iter()
        .find(|l| l.starts_with(&format!("{file}: ")))
        .unwrap_or_else(|| panic!("no line about {file} in {lines:?}"));
    line.rsplit(", ")
        .next()
        .and_then(|b| b.trim_end_matches(" bytes").parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {line:?}"))
}

#[test]
fn replica_pulls_from_a_running_site_incrementally_and_refuses_once_its_log_was_archived_past() {
    let mut group = Group::start(1);
    group.wait_for_master();
    let admin = group.sites[0].admin.clone();
    let put = |from: u32, to: u32| {
        for i in from..=to {
            let out = repsite(&[
                "put",
                &format!("key{i}"),
                &format!("value{i}"),
                "--admin",
                &admin,
            ]);
            assert!(out.status.success(), "{}", text(&out.stderr));
        }
    };
    let root = tempfile::tempdir().unwrap();
    let (bk, fresh) = (root.path().join("backup"), root.path().join("fresh"));

    put(1, 20);
    let (code, first, err) = replica_from_site(&admin, &bk);
    assert_eq!(code, Some(0), "{err}\n{}", group.logs());
    assert!(
        first.iter().any(|l| l.starts_with("log.0: copied")),
        "{first:?}"
    );
    assert!(
        first.last().unwrap().starts_with("Replica complete"),
        "{first:?}"
    );

    // Five more records: only they (and the small metadata file) move.
    put(21, 25);
    let (code, second, err) = replica_from_site(&admin, &bk);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        second
            .iter()
            .any(|l| l.starts_with("log.0: appended 5 records")),
        "{second:?}"
    );
    let appended = bytes_written(&second, "log.0");
    let pulled = bytes_read(&second);
    assert!(
        pulled <= appended + 512 && pulled < bytes_read(&first),
        "pulled {pulled} bytes for {appended} bytes of new records: {second:?}"
    );

    // The site commits on and archives its whole log: the backup's last record can no longer be
    // checked against the site, so the copy is refused and the backup left as it was.
    put(26, 28);
    let archived = repsite(&["archive", "--keep", "0", "--admin", &admin]);
    assert!(archived.status.success(), "{}", text(&archived.stderr));
    put(29, 30);
    let (code, _, err) = replica_from_site(&admin, &bk);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("archived its log since the last copy"),
        "{err}"
    );
    let verify = repsite(&["replica", "--verify", "--to", bk.to_str().unwrap()]);
    assert!(verify.status.success(), "{}", text(&verify.stderr));

    // Into an empty directory the copy is whole again, and equal to the site's storage.
    let (code, lines, err) = replica_from_site(&admin, &fresh);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        lines.iter().any(|l| l.starts_with("snapshot: copied")),
        "{lines:?}"
    );
    let status = terminate(&mut group.sites[0], "TERM");
    assert!(status.success());
    assert_eq!(contents(&fresh), contents(&group.sites[0].data_dir));

    // Nothing answers there any more: a clear failure, exit 1.
    let (code, _, err) = replica_from_site(&admin, &root.path().join("third"));
    assert_eq!(code, Some(1));
    assert!(err.contains(&admin), "{err}");
}

#[test]
fn bench_reports_throughput_and_latency() {
    let out = repsite(&[
        "bench",
        "--sites",
        "3",
        "--writes",
        "60",
        "--clients",
        "3",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["committed"], 60);
    assert_eq!(report["policy"], "quorum");
    assert!(report["commits_per_s"].as_f64().unwrap() > 0.0);
    assert!(report["p50_ms"].as_f64().unwrap() <= report["p99_ms"].as_f64().unwrap());
}

/// Every file in a directory with its bytes.
fn files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_second_process_on_a_running_sites_directory_exits_2_naming_the_holder_and_changes_nothing() {
    let group = Group::start(1);
    group.wait_for_master();
    let site = &group.sites[0];
    let holder = format!(
        "in use by process {} (repsite run, site {})",
        site.child.id(),
        site.addr
    );
    let before = files(&site.data_dir);
    assert!(before.contains_key("lock"), "{:?}", before.keys());

    // A second daemon on the same directory, with addresses of its own.
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(2);
    let config = dir.path().join("second.toml");
    fs::write(
        &config,
        format!(
            "addr = \"127.0.0.1:{}\"\nadmin = \"127.0.0.1:{}\"\ngroup = \"cli-test\"\n\
             secret = \"s3cret\"\ndata_dir = {:?}\ngroup_creator = true\n",
            ports[0], ports[1], site.data_dir
        ),
    )
    .unwrap();
    let out = repsite(&["run", "--config", config.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&holder), "{err}");

    // A cold-standby copy into the running site's directory.
    let src = dir.path().join("source");
    let (mut storage, _) = FileStorage::open(&src).unwrap();
    append(&mut storage, 1..=3);
    drop(storage);
    let out = repsite(&[
        "replica",
        "--from",
        src.to_str().unwrap(),
        "--to",
        site.data_dir.to_str().unwrap(),
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&holder), "{err}");

    assert_eq!(
        files(&site.data_dir),
        before,
        "the refused processes changed nothing"
    );
    assert!(status_json(&site.admin).is_some(), "the site still runs");
}
