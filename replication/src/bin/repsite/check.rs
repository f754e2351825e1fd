//! `repsite check`: the integrity check that ends the failback runbook. Asks every site for the
//! position its database has applied and a digest of it, waits (briefly) until every site has
//! applied the same position, then compares the digests there. Exit 0 if and only if every site
//! agrees; otherwise the sites that differ from the most common digest (or never reached the
//! common position, or did not answer) are named.

use crate::admin::{AdminRequest, Answer};
use crate::client;
use replication::Lsn;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// One site's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reading {
    /// Applied up to (`gen`, `lsn`), with this digest.
    At {
        /// Generation of the last applied record.
        gen: u64,
        /// LSN of the last applied record.
        lsn: Lsn,
        /// The database's digest.
        digest: u64,
    },
    /// No answer, or an error.
    Failed(String),
}

/// What the check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Each site (by admin address) and its last reading.
    pub readings: Vec<(String, Reading)>,
    /// Sites that disagree with the majority, never reached the common position, or failed.
    pub differ: Vec<String>,
}

impl Verdict {
    /// Whether every site agrees.
    pub fn agrees(&self) -> bool {
        self.differ.is_empty()
    }

    /// The table an operator reads.
    pub fn table(&self) -> String {
        let width = self
            .readings
            .iter()
            .map(|(s, _)| s.len())
            .max()
            .unwrap_or(4);
        let mut out = format!(
            "{:width$}  {:>10}  {:>5}  {:16}  verdict\n",
            "site", "lsn", "gen", "digest"
        );
        for (site, reading) in &self.readings {
            let verdict = if self.differ.contains(site) {
                "DIFFERS"
            } else {
                "ok"
            };
            let _ = match reading {
                Reading::At { gen, lsn, digest } => writeln!(
                    out,
                    "{site:width$}  {lsn:>10}  {gen:>5}  {digest:016x}  {verdict}"
                ),
                Reading::Failed(why) => writeln!(out, "{site:width$}  {why}  {verdict}"),
            };
        }
        out
    }
}

/// Reads every site until they have all applied the same position (or `wait` runs out), then
/// judges the digests at that position.
pub fn check(admins: &[String], wait: Duration, timeout: Duration) -> Verdict {
    let deadline = Instant::now() + wait;
    loop {
        let readings: Vec<(String, Reading)> = admins
            .iter()
            .map(|admin| (admin.clone(), read(admin, timeout)))
            .collect();
        let positions: Vec<(u64, Lsn)> = readings
            .iter()
            .filter_map(|(_, r)| match r {
                Reading::At { gen, lsn, .. } => Some((*gen, *lsn)),
                Reading::Failed(_) => None,
            })
            .collect();
        let level = positions.len() == readings.len() && positions.windows(2).all(|w| w[0] == w[1]);
        if level || Instant::now() >= deadline {
            return judge(readings);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every site's admin address, as the site at `admin` knows them: its own and those its peers
/// told it, for every member of the group (a member whose address it never learned is an
/// error naming it).
pub fn discover(admin: &str, timeout: Duration) -> Result<Vec<String>, String> {
    let response =
        client::call(admin, &AdminRequest::Status, timeout).map_err(|e| e.to_string())?;
    let Answer::Status(status) = response.answer else {
        return Err(format!(
            "{admin} did not answer its status: {:?}",
            response.answer
        ));
    };
    let mut found = Vec::new();
    for member in &status.membership {
        match status.admins.get(&member.site) {
            Some(addr) => found.push(addr.clone()),
            None => {
                return Err(format!(
                    "{admin} does not know the admin address of {} (not connected to it yet?); \
                     name every site with --admin",
                    member.site
                ))
            }
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

fn read(admin: &str, timeout: Duration) -> Reading {
    match client::call(admin, &AdminRequest::Digest, timeout) {
        Ok(response) => match response.answer {
            Answer::Digest { gen, lsn, digest } => Reading::At { gen, lsn, digest },
            Answer::Error(e) => Reading::Failed(e.message),
            other => Reading::Failed(format!("unexpected answer {other:?}")),
        },
        Err(e) => Reading::Failed(e.to_string()),
    }
}

/// The most common (position, digest) is the group's; every other site differs.
fn judge(readings: Vec<(String, Reading)>) -> Verdict {
    let mut votes: BTreeMap<(u64, Lsn, u64), usize> = BTreeMap::new();
    for (_, r) in &readings {
        if let Reading::At { gen, lsn, digest } = r {
            *votes.entry((*gen, *lsn, *digest)).or_default() += 1;
        }
    }
    // Ties go to the most advanced position (then the lowest digest, for a stable answer).
    let group = votes
        .iter()
        .max_by_key(|(key, n)| (**n, key.0, key.1, std::cmp::Reverse(key.2)))
        .map(|(key, _)| *key);
    let differ = readings
        .iter()
        .filter(|(_, r)| match (r, group) {
            (Reading::At { gen, lsn, digest }, Some(g)) => (*gen, *lsn, *digest) != g,
            _ => true,
        })
        .map(|(site, _)| site.clone())
        .collect();
    Verdict { readings, differ }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(lsn: Lsn, digest: u64) -> Reading {
        Reading::At {
            gen: 1,
            lsn,
            digest,
        }
    }

    #[test]
    fn the_sites_off_the_majority_differ_and_agreement_is_all_of_them() {
        let all = judge(vec![("a".into(), at(5, 7)), ("b".into(), at(5, 7))]);
        assert!(all.agrees());
        let one = judge(vec![
            ("a".into(), at(5, 7)),
            ("b".into(), at(5, 9)),
            ("c".into(), at(5, 7)),
        ]);
        assert_eq!(one.differ, ["b"]);
        assert!(one.table().contains("DIFFERS"));
        let behind = judge(vec![
            ("a".into(), at(5, 7)),
            ("b".into(), at(4, 6)),
            ("c".into(), Reading::Failed("refused".into())),
        ]);
        // A tie between a and b goes to the more advanced; c could not be judged.
        assert_eq!(behind.differ, ["b", "c"]);
    }
}
