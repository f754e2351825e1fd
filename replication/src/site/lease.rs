//! Master leases, as Berkeley DB's `DB_REP_CONF_LEASE`: reads on the master that see every
//! acknowledged write.
//!
//! With each heartbeat a master asks its clients for a lease ([`Message::LeaseRequest`], stamped
//! with the master's clock). A client following that master grants it ([`Message::LeaseGrant`])
//! and so promises, for `lease_timeout_ms` from then by its own clock plus the skew bound, to
//! help elect no other master: it votes for no one and does not stand. The master counts each
//! lease from its request's stamp (earlier than the grant) for `lease_timeout_ms` less the skew
//! bound, and holds the lease while a majority of the group (itself included) have one running.
//!
//! Why a leased read sees every acknowledged write: any later master is elected by a majority,
//! which meets the majority that granted this master its lease in at least one site, and that
//! site votes only once its promise has run out, which by the skew bound is after this master's
//! lease has. So while this master holds its lease no other master exists, and this one applied
//! every write it acknowledged; it was elected with the most advanced log of a majority, so it
//! holds every write its predecessors acknowledged under a majority policy. Clocks that drift
//! apart faster than `clock_skew_ppm` break the argument, which the simulator shows.
//!
//! A site that restarts may have granted a lease just before it went down: it keeps the promise
//! for a whole lease timeout from its start.

use super::*;
use crate::types::Gen;

impl<S: Storage> Site<S> {
    /// Whether this group runs with leases.
    pub(super) fn leases_on(&self) -> bool {
        self.cfg.timeouts.lease_timeout_ms > 0
    }

    /// The skew bound's share of `ms`, rounded up.
    fn skew_of(&self, ms: u64) -> u64 {
        (ms * u64::from(self.cfg.timeouts.clock_skew_ppm)).div_ceil(1_000_000)
    }

    /// Whether this site still keeps a lease it granted: it must help elect no master.
    pub(super) fn lease_promised(&self) -> bool {
        self.lease_promised_until
            .is_some_and(|until| self.now < until)
    }

    /// When the promise this site keeps runs out (now if it keeps none).
    pub(super) fn lease_promise_end(&self) -> Time {
        self.lease_promised_until.unwrap_or(self.now).max(self.now)
    }

    /// A site opened with leases on keeps a promise it may have made before it went down.
    pub(super) fn promise_on_open(&mut self) {
        if self.leases_on() {
            let t = self.cfg.timeouts.lease_timeout_ms;
            self.lease_promised_until = Some(self.now.plus_ms(t + self.skew_of(t)));
        }
    }

    /// Master: asks every client for a lease (with each heartbeat). Not while handing over: the
    /// target must be free of its promise to take over.
    pub(super) fn request_leases(&mut self) {
        let handing_over = matches!(&self.role, Role::Master(m) if m.step_down.is_some());
        if !self.leases_on() || !self.is_master() || handing_over {
            return;
        }
        let msg = Message::LeaseRequest {
            gen: self.meta.gen,
            stamp: self.now.0,
        };
        for to in self.recipients() {
            self.send(&to, msg.clone());
        }
    }

    /// Client: grants the master it follows a lease, and keeps the promise.
    pub(super) fn on_lease_request(&mut self, from: SiteAddr, gen: Gen, stamp: u64) {
        let following = matches!(&self.role, Role::Client(c)
            if c.master.as_ref() == Some(&from) && c.master_gen == gen)
            && gen == self.meta.gen;
        if !self.leases_on() || !following {
            self.stats.messages_ignored += 1;
            return;
        }
        let t = self.cfg.timeouts.lease_timeout_ms;
        let until = self.now.plus_ms(t + self.skew_of(t));
        self.lease_promised_until = Some(self.lease_promise_end().max(until));
        self.send(&from, Message::LeaseGrant { gen, stamp });
    }

    /// Master: a client granted a lease.
    pub(super) fn on_lease_grant(&mut self, from: SiteAddr, gen: Gen, stamp: u64) {
        let member = self.group().contains(&from);
        match &mut self.role {
            Role::Master(m) if gen == self.meta.gen && member => {
                let grant = m.lease_grants.entry(from).or_default();
                *grant = (*grant).max(stamp);
            }
            _ => self.stats.messages_ignored += 1,
        }
    }

    /// Whether this master holds leases from a majority of the group right now; why not if not.
    pub(super) fn lease_held(&self) -> Result<(), String> {
        if !self.leases_on() {
            return Err("leases are not configured (lease_timeout_ms = 0)".into());
        }
        let Role::Master(m) = &self.role else {
            return Err("not master".into());
        };
        let t = self.cfg.timeouts.lease_timeout_ms;
        let runs = t - self.skew_of(t);
        let running = self
            .others()
            .iter()
            .filter(|a| {
                m.lease_grants
                    .get(*a)
                    .is_some_and(|&stamp| Time(stamp).plus_ms(runs) > self.now)
            })
            .count();
        // A strict majority whatever the two-site setting: a lenient pair elects a lone site,
        // which a lease cannot rule out unless the other site granted one.
        let needed = majority(self.group_size());
        if running + 1 >= needed {
            Ok(())
        } else {
            Err(format!(
                "{} of the {needed} leases needed are running",
                running + 1
            ))
        }
    }

    /// Reads a key: from this site's database, or for a leased read, only as a master holding
    /// its lease.
    pub(super) fn read(&mut self, id: RequestId, key: Vec<u8>, leased: bool) {
        if leased {
            if !self.is_master() {
                let master = self.master().cloned();
                self.reply(id, Err(RequestError::NotMaster { master }));
                return;
            }
            if let Err(reason) = self.lease_held() {
                self.reply(id, Err(RequestError::NoLease { reason }));
                return;
            }
        }
        let value = self.db.get(&key).map(<[u8]>::to_vec);
        self.reply(id, Ok(Reply::Value(value)));
    }
}
