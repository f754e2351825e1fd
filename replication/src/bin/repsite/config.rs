//! The `repsite run` configuration file: one TOML file per site, what Berkeley DB's DB_CONFIG
//! file is to a replicated environment (this site's address, the group, priority, ack policy,
//! timeouts). `examples/repsite.toml` is the commented reference.
//!
//! Loading never panics on what an operator wrote: every mistake becomes a [`ConfigFileError`]
//! naming the file, the line and column where possible, and what was expected there. Unknown
//! keys are refused rather than ignored, so a misspelt `ack_polcy` cannot silently fall back to
//! the default. Relative paths are relative to the configuration file's directory, so a site's
//! files can move together.

use replication::node::NodeConfig;
use replication::site::{AckPolicy, Config, Timeouts};
use replication::SiteAddr;
use serde::Deserialize;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// The file as written, before any check beyond its shape.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    addr: Spanned<String>,
    listen: Option<Spanned<String>>,
    admin: Spanned<String>,
    admin_token_file: Option<Spanned<String>>,
    metrics: Option<Spanned<String>>,
    group: Spanned<String>,
    secret: Option<Spanned<String>>,
    secret_file: Option<Spanned<String>>,
    data_dir: Spanned<String>,
    message_log: Option<Spanned<String>>,
    sites: Option<Spanned<Vec<String>>>,
    group_creator: Option<Spanned<bool>>,
    helper: Option<Spanned<String>>,
    protocol_version: Option<Spanned<u8>>,
    priority: Option<u32>,
    ack_policy: Option<AckPolicy>,
    two_site_strict: Option<bool>,
    log_batch_records: Option<Spanned<usize>>,
    timeouts: Option<Spanned<Timeouts>>,
    network: Option<Network>,
    tls: Option<Spanned<TlsTable>>,
}

/// The `[tls]` table: the site's certificate and key, and the group's CA (PEM files).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsTable {
    cert: String,
    key: String,
    ca: String,
}

/// The `[network]` table: the driver's connection limits.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Network {
    handshake_timeout_ms: Option<u64>,
    reconnect_min_ms: Option<u64>,
    reconnect_max_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    frame_limit: Option<Spanned<u32>>,
}

/// A site's configuration, checked and ready to run.
#[derive(Clone, Debug)]
pub struct SiteConfig {
    /// The file it was read from.
    pub file: PathBuf,
    /// What the node driver runs with.
    pub node: NodeConfig,
    /// Where the admin (client) protocol listens.
    pub admin: String,
    /// The token every admin request must carry, if the site has one.
    pub admin_token: Option<Vec<u8>>,
    /// Where Prometheus scrapes the site's metrics (`GET /metrics`), if anywhere.
    pub metrics: Option<String>,
    /// The site's storage directory.
    pub data_dir: PathBuf,
    /// The human-readable message log (Berkeley DB products' replication message file).
    pub message_log: PathBuf,
}

/// A configuration file that cannot be used. Displays as `FILE:LINE:COLUMN: what is wrong`
/// followed by the offending line, so an operator can fix it without guessing.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error(
        "{file}: cannot read the configuration file: {source} (expected a TOML file such as \
         replication/examples/repsite.toml)"
    )]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// Something about the file as a whole (a missing key has no line).
    #[error("{file}: {message}")]
    Whole {
        /// The file.
        file: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// Something at a known place in the file.
    #[error("{file}:{line}:{column}: {message}{snippet}")]
    At {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong and what was expected.
        message: String,
        /// The line itself with a caret under the column (empty if unavailable).
        snippet: Snippet,
    },
}

/// The offending line of a configuration file, shown under an error.
#[derive(Debug, Default)]
pub struct Snippet(Option<(usize, String, usize)>);

impl fmt::Display for Snippet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some((line, text, column)) = &self.0 else {
            return Ok(());
        };
        let gutter = line.to_string();
        let pad = " ".repeat(gutter.len());
        write!(
            f,
            "\n {pad} |\n {gutter} | {text}\n {pad} | {}^",
            " ".repeat(column.saturating_sub(1))
        )
    }
}

/// Reads and checks the configuration file at `path`.
pub fn load(path: &Path) -> Result<SiteConfig, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        file: path.display().to_string(),
        source,
    })?;
    parse(&text, path)
}

/// Checks configuration `text` read from `path` (named in errors; relative paths in the file are
/// resolved against its directory).
pub fn parse(text: &str, path: &Path) -> Result<SiteConfig, ConfigFileError> {
    let at = Locator { text, path };
    let raw: RawConfig = toml::from_str(text).map_err(|e| match e.span() {
        // toml points a missing key at the top of the file, where nothing is wrong.
        Some(span) if !e.message().starts_with("missing field") => {
            at.error(span, explain(e.message()))
        }
        _ => at.whole(explain(e.message())),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));

    let addr = host_port(&at, &raw.addr, "addr")?;
    let listen = match &raw.listen {
        Some(listen) => host_port(&at, listen, "listen")?,
        None => addr.clone(),
    };
    let admin = host_port(&at, &raw.admin, "admin")?;
    if admin == listen || admin == addr {
        return Err(at.error(
            raw.admin.span(),
            "the admin address must differ from the site's replication address".into(),
        ));
    }
    let admin_token = match &raw.admin_token_file {
        Some(file) => Some(read_secret_file(&at, file, base, "admin token")?),
        None => None,
    };
    if admin_token.is_none() && !is_loopback(&admin) {
        return Err(at.error(
            raw.admin.span(),
            format!(
                "the admin address {admin} is reachable from other hosts: bind it to loopback \
                 (127.0.0.1:port) or give `admin_token_file = \"path\"`, a token every admin \
                 request must carry"
            ),
        ));
    }
    let metrics = match &raw.metrics {
        Some(m) => Some(host_port(&at, m, "metrics")?),
        None => None,
    };
    let group = raw.group.get_ref().trim().to_string();
    if group.is_empty() {
        return Err(at.error(raw.group.span(), "expected a non-empty group name".into()));
    }
    let secret = secret(&at, &raw, base)?;
    let data_dir = path_value(&at, &raw.data_dir, base)?;
    let message_log = match &raw.message_log {
        Some(log) => path_value(&at, log, base)?,
        None => data_dir.join("messages.log"),
    };

    let mut site = Config::new(SiteAddr::new(addr.clone()), []);
    membership(&at, &raw, &mut site)?;
    if let Some(v) = &raw.protocol_version {
        site.protocol_version = *v.get_ref();
        if !matches!(site.protocol_version, 1 | 2) {
            return Err(at.error(
                v.span(),
                format!("unknown protocol version {}: expected 1 or 2", v.get_ref()),
            ));
        }
        if site.protocol_version == 1 && site.sites.is_empty() {
            return Err(at.error(
                v.span(),
                "protocol version 1 has no membership database: it needs the static `sites` \
                 list, not `group_creator` or `helper`"
                    .into(),
            ));
        }
    }
    if let Some(priority) = raw.priority {
        site.priority = priority;
    }
    if let Some(policy) = raw.ack_policy {
        site.ack_policy = policy;
    }
    if let Some(strict) = raw.two_site_strict {
        site.two_site_strict = strict;
    }
    if let Some(batch) = &raw.log_batch_records {
        site.log_batch_records = *batch.get_ref();
    }
    if let Some(timeouts) = &raw.timeouts {
        site.timeouts = timeouts.get_ref().clone();
    }
    // What is left for the core's own check is about timers and batch sizes: point there.
    if let Err(e) = site.validate() {
        let span = match (&raw.log_batch_records, &raw.timeouts) {
            (Some(batch), _) if e.0.contains("log_batch_records") => batch.span(),
            (_, Some(timeouts)) => timeouts.span(),
            _ => return Err(at.whole(e.0)),
        };
        return Err(at.error(span, e.0));
    }

    let mut node = NodeConfig::new(site, group, secret);
    node.admin = Some(admin.clone());
    node.listen = listen;
    let network = raw.network.unwrap_or_default();
    if let Some(ms) = network.handshake_timeout_ms {
        node.handshake_timeout_ms = ms;
    }
    if let Some(ms) = network.reconnect_min_ms {
        node.reconnect_min_ms = ms;
    }
    if let Some(ms) = network.reconnect_max_ms {
        node.reconnect_max_ms = ms;
    }
    if let Some(ms) = network.idle_timeout_ms {
        node.idle_timeout_ms = ms;
    }
    if let Some(limit) = &network.frame_limit {
        // Below this a log batch of ordinary records cannot travel at all.
        const FRAME_LIMIT_MIN: u32 = 64 << 10;
        if *limit.get_ref() < FRAME_LIMIT_MIN {
            return Err(at.error(
                limit.span(),
                format!("expected a frame limit of at least {FRAME_LIMIT_MIN} bytes"),
            ));
        }
        node.frame_limit = *limit.get_ref();
    }
    if let Some(tls) = &raw.tls {
        let t = tls.get_ref();
        let files = replication::node::tls::TlsFiles {
            cert: base.join(&t.cert),
            key: base.join(&t.key),
            ca: base.join(&t.ca),
        };
        let loaded = replication::node::tls::Tls::load(&files)
            .map_err(|e| at.error(tls.span(), format!("[tls]: {e}")))?;
        node.tls = replication::node::tls::TlsHandle(Some(std::sync::Arc::new(loaded)));
    }
    Ok(SiteConfig {
        file: path.to_path_buf(),
        node,
        admin,
        admin_token,
        metrics,
        data_dir,
        message_log,
    })
}

/// Adds the words an operator needs to toml's terse messages.
fn explain(message: &str) -> String {
    let message = message.trim_end();
    match message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        Some(key) => {
            let (value, what) = key_example(key);
            format!("{message}: expected `{key} = {value}` ({what})")
        }
        None => message.to_string(),
    }
}

/// An example value and a description of each required key, for "missing field" errors.
fn key_example(key: &str) -> (&'static str, &'static str) {
    match key {
        "addr" => (
            "\"host:port\"",
            "this site's address, exactly as the other sites know it",
        ),
        "admin" => (
            "\"127.0.0.1:port\"",
            "where `repsite status`, `put` and `get` reach this site",
        ),
        "group" => ("\"name\"", "the replication group's name"),
        "data_dir" => ("\"path\"", "the site's storage directory"),
        _ => ("...", "see examples/repsite.toml"),
    }
}

/// Finds lines and columns for byte spans of one file.
struct Locator<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Locator<'_> {
    fn whole(&self, message: String) -> ConfigFileError {
        ConfigFileError::Whole {
            file: self.path.display().to_string(),
            message,
        }
    }

    fn error(&self, span: Range<usize>, message: String) -> ConfigFileError {
        let start = span.start.min(self.text.len());
        // Spans come from the parser, on character boundaries; be safe anyway.
        let before = self.text.get(..start).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        let text = self.text[line_start..].lines().next().unwrap_or("");
        let snippet = if self.text.is_empty() {
            Snippet(None)
        } else {
            Snippet(Some((line, text.to_string(), column)))
        };
        ConfigFileError::At {
            file: self.path.display().to_string(),
            line,
            column,
            message,
            snippet,
        }
    }
}

/// Checks that `value` has the form `host:port` with a port number, as sites are named.
fn host_port(
    at: &Locator<'_>,
    value: &Spanned<String>,
    key: &str,
) -> Result<String, ConfigFileError> {
    let text = value.get_ref().trim();
    let ok = text
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if ok {
        Ok(text.to_string())
    } else {
        Err(at.error(
            value.span(),
            format!("`{key}`: expected an address of the form host:port, found {text:?}"),
        ))
    }
}

fn path_value(
    at: &Locator<'_>,
    value: &Spanned<String>,
    base: &Path,
) -> Result<PathBuf, ConfigFileError> {
    if value.get_ref().trim().is_empty() {
        return Err(at.error(value.span(), "expected a non-empty path".into()));
    }
    Ok(base.join(value.get_ref()))
}

/// The group secret, inline or from `secret_file` (exactly one of the two).
fn secret(at: &Locator<'_>, raw: &RawConfig, base: &Path) -> Result<Vec<u8>, ConfigFileError> {
    match (&raw.secret, &raw.secret_file) {
        (Some(_), Some(file)) => Err(at.error(
            file.span(),
            "give either `secret` or `secret_file`, not both".into(),
        )),
        (None, None) => Err(at.whole(
            "missing the group secret: expected `secret = \"...\"` or `secret_file = \"path\"`"
                .into(),
        )),
        (Some(secret), None) => {
            if secret.get_ref().is_empty() {
                return Err(at.error(secret.span(), "expected a non-empty secret".into()));
            }
            Ok(secret.get_ref().as_bytes().to_vec())
        }
        (None, Some(file)) => read_secret_file(at, file, base, "secret"),
    }
}

/// The contents of a secret's file (a trailing newline, which editors add, is not part of it).
fn read_secret_file(
    at: &Locator<'_>,
    file: &Spanned<String>,
    base: &Path,
    what: &str,
) -> Result<Vec<u8>, ConfigFileError> {
    let path = path_value(at, file, base)?;
    let bytes = std::fs::read(&path).map_err(|e| {
        at.error(
            file.span(),
            format!("cannot read the {what} file {}: {e}", path.display()),
        )
    })?;
    let secret = bytes.trim_ascii_end().to_vec();
    if secret.is_empty() {
        return Err(at.error(
            file.span(),
            format!("the {what} file {} is empty", path.display()),
        ));
    }
    Ok(secret)
}

/// Whether `host:port` names this machine only (127.0.0.0/8, ::1, localhost).
fn is_loopback(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// How the site finds its group: a static (legacy) site list, or `group_creator` / `helper`.
fn membership(at: &Locator<'_>, raw: &RawConfig, site: &mut Config) -> Result<(), ConfigFileError> {
    let creator = raw.group_creator.as_ref().filter(|c| *c.get_ref());
    match (&raw.sites, creator, &raw.helper) {
        (Some(sites), None, None) => {
            let mut list = Vec::new();
            for name in sites.get_ref() {
                let name = name.trim();
                let ok = name
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
                if !ok {
                    return Err(at.error(
                        sites.span(),
                        format!(
                            "`sites`: expected addresses of the form host:port, found {name:?}"
                        ),
                    ));
                }
                let addr = SiteAddr::new(name);
                if list.contains(&addr) {
                    return Err(at.error(sites.span(), format!("`sites` lists {name} twice")));
                }
                list.push(addr);
            }
            if !list.contains(&site.addr) {
                return Err(at.error(
                    sites.span(),
                    format!(
                        "`sites` must list every site of the group, this one ({}) included",
                        site.addr
                    ),
                ));
            }
            site.sites = list;
            Ok(())
        }
        (Some(sites), _, _) => Err(at.error(
            sites.span(),
            "give either the static `sites` list or `group_creator`/`helper`, not both".into(),
        )),
        (None, Some(_), Some(helper)) => Err(at.error(
            helper.span(),
            "a group creator starts the group alone: it takes no `helper`".into(),
        )),
        (None, Some(_), None) => {
            site.group_creator = true;
            Ok(())
        }
        (None, None, Some(helper)) => {
            let name = host_port(at, helper, "helper")?;
            if name == site.addr.as_str() {
                return Err(at.error(helper.span(), "a site cannot be its own helper".into()));
            }
            site.helper = Some(SiteAddr::new(name));
            Ok(())
        }
        (None, None, None) => Err(at.whole(
            "missing the group: expected `sites = [...]` (a static group), \
             `group_creator = true` (the first site of a new group) or `helper = \"host:port\"` \
             (a site joining through a member)"
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
addr = "127.0.0.1:7001"
admin = "127.0.0.1:8001"
group = "payroll"
secret = "s3cret"
data_dir = "site1"
sites = ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
priority = 50
ack_policy = "all_peers"

[timeouts]
heartbeat_interval_ms = 100
"#;

    fn parse_at(text: &str) -> Result<SiteConfig, ConfigFileError> {
        parse(text, Path::new("/etc/repsite/site1.toml"))
    }

    /// The error's text, asserting it is at `line`.
    fn error_at(text: &str, line: usize) -> String {
        let err = parse_at(text).expect_err("should be refused");
        match &err {
            ConfigFileError::At { line: got, .. } => assert_eq!(*got, line, "{err}"),
            other => panic!("expected a located error, got {other}"),
        }
        err.to_string()
    }

    #[test]
    fn a_static_group_config_becomes_the_node_config() {
        let cfg = parse_at(GOOD).unwrap();
        let site = &cfg.node.site;
        assert_eq!(site.addr.as_str(), "127.0.0.1:7001");
        assert_eq!(site.sites.len(), 3);
        assert_eq!(site.priority, 50);
        assert_eq!(site.ack_policy, AckPolicy::AllPeers);
        assert_eq!(site.timeouts.heartbeat_interval_ms, 100);
        assert_eq!(
            site.timeouts.heartbeat_timeout_ms,
            Timeouts::default().heartbeat_timeout_ms,
            "unset timeouts keep their defaults"
        );
        assert_eq!(cfg.node.listen, "127.0.0.1:7001", "listen defaults to addr");
        assert_eq!(cfg.node.secret, b"s3cret");
        assert_eq!(cfg.node.group, "payroll");
        assert_eq!(cfg.admin, "127.0.0.1:8001");
        assert_eq!(
            cfg.data_dir,
            Path::new("/etc/repsite/site1"),
            "relative to the file"
        );
        assert_eq!(
            cfg.message_log,
            Path::new("/etc/repsite/site1/messages.log")
        );
    }

    #[test]
    fn the_documented_example_file_is_valid() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/repsite.toml"
        ));
        let cfg = load(path).unwrap_or_else(|e| panic!("{e}"));
        assert!(cfg.node.site.helper.is_some() || cfg.node.site.group_creator);
    }

    #[test]
    fn group_creator_and_helper_configs_are_accepted() {
        let base =
            "addr = \"h:1\"\nadmin = \"127.0.0.1:2\"\ngroup = \"g\"\nsecret = \"s\"\ndata_dir = \"d\"\n";
        let creator = parse_at(&format!("{base}group_creator = true\n")).unwrap();
        assert!(creator.node.site.group_creator);
        let joiner = parse_at(&format!("{base}helper = \"h:3\"\n")).unwrap();
        assert_eq!(joiner.node.site.helper, Some(SiteAddr::new("h:3")));
    }

    #[test]
    fn a_syntax_error_names_the_line_and_what_was_expected() {
        let text = GOOD.replace("priority = 50", "priority 50");
        let err = error_at(&text, 8);
        assert!(err.starts_with("/etc/repsite/site1.toml:8:"), "{err}");
        assert!(err.contains("expected"), "{err}");
        assert!(err.contains("priority 50"), "the line is shown: {err}");
    }

    #[test]
    fn an_unknown_key_is_refused_with_the_keys_expected() {
        let text = GOOD.replace("priority = 50", "priority = 50\nack_polcy = \"all\"");
        let err = error_at(&text, 9);
        assert!(err.contains("unknown field `ack_polcy`"), "{err}");
        assert!(
            err.contains("ack_policy"),
            "the expected keys are listed: {err}"
        );
    }

    #[test]
    fn an_unknown_key_in_the_timeouts_table_is_refused() {
        let text = GOOD.replace("heartbeat_interval_ms", "heartbeat_intervall_ms");
        let err = error_at(&text, 12);
        assert!(err.contains("heartbeat_intervall_ms"), "{err}");
    }

    #[test]
    fn a_bad_ack_policy_lists_the_policies() {
        let text = GOOD.replace("\"all_peers\"", "\"most\"");
        let err = error_at(&text, 9);
        assert!(err.contains("most") && err.contains("quorum"), "{err}");
    }

    #[test]
    fn a_missing_required_key_says_what_to_write() {
        let text = GOOD.replace("admin = \"127.0.0.1:8001\"\n", "");
        let err = parse_at(&text).unwrap_err().to_string();
        assert!(
            err.starts_with("/etc/repsite/site1.toml: missing field `admin`"),
            "{err}"
        );
        assert!(
            err.contains("expected `admin = \"127.0.0.1:port\"`"),
            "{err}"
        );
    }

    #[test]
    fn a_static_list_without_this_site_is_refused_at_the_list() {
        let text = GOOD.replace("\"127.0.0.1:7001\", ", "");
        let err = error_at(&text, 7);
        assert!(err.contains("this one (127.0.0.1:7001) included"), "{err}");
    }

    #[test]
    fn both_ways_of_finding_the_group_are_refused() {
        let text = GOOD.replace("priority = 50", "priority = 50\nhelper = \"h:1\"");
        let err = error_at(&text, 7);
        assert!(err.contains("not both"), "{err}");
    }

    #[test]
    fn no_way_of_finding_the_group_is_refused() {
        let text = GOOD.replace(
            "sites = [\"127.0.0.1:7001\", \"127.0.0.1:7002\", \"127.0.0.1:7003\"]\n",
            "",
        );
        let err = parse_at(&text).unwrap_err().to_string();
        assert!(err.contains("group_creator = true"), "{err}");
    }

    #[test]
    fn a_malformed_address_is_refused_at_its_line() {
        let text = GOOD.replace("\"127.0.0.1:8001\"", "\"localhost\"");
        let err = error_at(&text, 3);
        assert!(err.contains("host:port"), "{err}");
    }

    #[test]
    fn an_admin_address_off_loopback_needs_a_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.toml");
        let text = GOOD.replace("admin = \"127.0.0.1:8001\"", "admin = \"0.0.0.0:8001\"");
        let err = parse(&text, &path).unwrap_err().to_string();
        assert!(err.contains("reachable from other hosts"), "{err}");
        assert!(err.contains("admin_token_file"), "{err}");
        std::fs::write(dir.path().join("token"), "s3cret-token\n").unwrap();
        let text = format!("admin_token_file = \"token\"\n{text}");
        let cfg = parse(&text, &path).unwrap();
        assert_eq!(cfg.admin_token.as_deref(), Some(&b"s3cret-token"[..]));
        std::fs::write(dir.path().join("token"), "\n").unwrap();
        let err = parse(&text, &path).unwrap_err().to_string();
        assert!(
            err.contains("the admin token file") && err.contains("is empty"),
            "{err}"
        );
        for host in ["127.0.0.1:1", "localhost:1", "[::1]:1", "127.9.9.9:1"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["0.0.0.0:1", "10.0.0.1:1", "db1:1", "[::]:1"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn the_admin_address_cannot_be_the_replication_address() {
        let text = GOOD.replace("\"127.0.0.1:8001\"", "\"127.0.0.1:7001\"");
        error_at(&text, 3);
    }

    #[test]
    fn the_secret_comes_inline_or_from_a_file_never_both_or_neither() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), "from file\n").unwrap();
        let path = dir.path().join("site.toml");
        let text = GOOD.replace("secret = \"s3cret\"", "secret_file = \"secret\"");
        let cfg = parse(&text, &path).unwrap();
        assert_eq!(
            cfg.node.secret, b"from file",
            "the final newline is not the secret"
        );

        let both = GOOD.replace(
            "secret = \"s3cret\"",
            "secret = \"a\"\nsecret_file = \"secret\"",
        );
        assert!(error_at(&both, 6).contains("not both"));
        let neither = GOOD.replace("secret = \"s3cret\"\n", "");
        assert!(parse_at(&neither)
            .unwrap_err()
            .to_string()
            .contains("secret_file"));
        let missing = GOOD.replace("secret = \"s3cret\"", "secret_file = \"nowhere\"");
        let err = parse(&missing, &path).unwrap_err().to_string();
        assert!(
            err.contains("cannot read the secret file") && err.contains("nowhere"),
            "{err}"
        );
    }

    #[test]
    fn protocol_version_1_needs_the_static_list() {
        let text = "addr = \"h:1\"\nadmin = \"127.0.0.1:2\"\ngroup = \"g\"\nsecret = \"s\"\n\
                    data_dir = \"d\"\ngroup_creator = true\nprotocol_version = 1\n";
        assert!(error_at(text, 7).contains("static `sites`"));
        let text = GOOD.replace("priority = 50", "protocol_version = 3");
        assert!(error_at(&text, 8).contains("expected 1 or 2"));
    }

    #[test]
    fn timers_the_core_cannot_run_with_point_at_the_timeouts_table() {
        let text = GOOD.replace(
            "heartbeat_interval_ms = 100",
            "heartbeat_interval_ms = 5000",
        );
        let err = error_at(&text, 11);
        assert!(err.contains("heartbeat_interval_ms (5000)"), "{err}");
    }

    #[test]
    fn an_empty_file_says_what_is_missing() {
        let err = parse_at("").unwrap_err().to_string();
        assert!(err.contains("missing field"), "{err}");
    }
}
