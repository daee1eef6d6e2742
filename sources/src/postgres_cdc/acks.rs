//! Acknowledgement bookkeeping of the replication stream: which WAL positions were decoded,
//! received, made durable downstream and confirmed to the server, and how old the oldest
//! unconfirmed commit is. Pure state, no I/O: the source reports what happened and asks
//! what it may confirm.
//!
//! The rule it keeps: the server is told a position is flushed (`confirmed_flush_lsn`) only
//! once every batch holding changes up to it is durable downstream. Positions advance past
//! WAL that holds nothing of ours (keepalives, idle periods) only while nothing emitted is
//! still unacknowledged.

use std::collections::VecDeque;

/// See the module docs. LSNs are `u64`s; times are milliseconds since the Unix epoch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Acks {
    /// End LSN of the last commit fully decoded: the position stream batches carry.
    decoded: u64,
    /// Highest WAL position received from the server.
    received: u64,
    /// Highest LSN acknowledged durable downstream.
    durable: u64,
    /// Last LSN confirmed to the server.
    confirmed: u64,
    /// Stream batches handed out, and the highest of them acknowledged durable: all
    /// emitted data is durable exactly when they are equal.
    emitted: u64,
    acked: u64,
    /// Commits decoded and not yet confirmed, oldest first: (end LSN, commit time of the
    /// oldest commit merged into the entry). Commits less than a second apart share an
    /// entry, which bounds its length.
    unconfirmed: VecDeque<(u64, i64)>,
}

impl Acks {
    /// Streaming starts after `lsn` (the slot's consistent point, or a stored position).
    pub fn start(&mut self, lsn: u64) {
        self.decoded = lsn;
    }

    /// End LSN of the last commit fully decoded.
    pub fn decoded(&self) -> u64 {
        self.decoded
    }

    /// Highest WAL position received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Last LSN confirmed to the server.
    pub fn confirmed(&self) -> u64 {
        self.confirmed
    }

    /// The sequence number of the next stream batch handed out.
    pub fn next_seq(&mut self) -> u64 {
        self.emitted += 1;
        self.emitted
    }

    /// WAL up to `wal_end` has arrived.
    pub fn receive(&mut self, wal_end: u64) {
        self.received = self.received.max(wal_end);
    }

    /// A commit ending at `end_lsn` was decoded; `commit_ms` is its commit time (from its
    /// Begin message; `None` if none was seen) for the lag check.
    pub fn commit_decoded(&mut self, end_lsn: u64, commit_ms: Option<i64>) {
        if let Some(t) = commit_ms {
            match self.unconfirmed.back_mut() {
                Some(last) if t - last.1 < 1000 => last.0 = end_lsn,
                _ => self.unconfirmed.push_back((end_lsn, t)),
            }
        }
        self.decoded = end_lsn;
    }

    /// The batch with sequence number `seq`, and everything before it, is durable
    /// downstream up to `lsn`.
    pub fn acknowledge(&mut self, lsn: u64, seq: u64) {
        self.durable = self.durable.max(lsn);
        self.acked = self.acked.max(seq);
    }

    /// Whether every batch handed out is acknowledged.
    pub fn all_acknowledged(&self) -> bool {
        self.acked >= self.emitted
    }

    /// A keepalive reports the server's WAL end. When nothing of ours is in flight (no
    /// open transaction or pending rows, said by `stream_idle`, and everything emitted
    /// acknowledged), WAL up to there holds nothing we need: it counts as decoded and
    /// durable, so an idle database does not retain WAL.
    pub fn keepalive(&mut self, wal_end: u64, stream_idle: bool) {
        self.receive(wal_end);
        if stream_idle && self.all_acknowledged() {
            self.decoded = self.decoded.max(wal_end);
            self.durable = self.durable.max(wal_end);
        }
    }

    /// Nothing arrived for a while: with nothing in flight, everything decoded is durable.
    pub fn idle(&mut self, stream_idle: bool) {
        if stream_idle && self.all_acknowledged() {
            self.durable = self.durable.max(self.decoded);
        }
    }

    /// What a standby status update reports: (written, flushed). Received WAL counts as
    /// written; only durable WAL as flushed.
    pub fn status(&self) -> (u64, u64) {
        (self.received.max(self.durable), self.durable)
    }

    /// Whether there is durable WAL the server has not been told about.
    pub fn behind(&self) -> bool {
        self.durable > self.confirmed
    }

    /// The server was told `flushed` (from [`Acks::status`]).
    pub fn confirm(&mut self, flushed: u64) {
        self.confirmed = flushed;
        while self
            .unconfirmed
            .front()
            .is_some_and(|&(lsn, _)| lsn <= flushed)
        {
            self.unconfirmed.pop_front();
        }
    }

    /// WAL received but not confirmed, in bytes.
    pub fn lag_bytes(&self) -> u64 {
        self.received.saturating_sub(self.confirmed)
    }

    /// Age at `now_ms` of the oldest commit not yet confirmed, in whole seconds (0: none).
    pub fn lag_secs(&self, now_ms: i64) -> i64 {
        self.unconfirmed
            .front()
            .map_or(0, |&(_, t)| (now_ms - t).max(0) / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirms_only_what_is_durable() {
        let mut a = Acks::default();
        a.start(100);
        a.receive(300);
        a.commit_decoded(200, Some(1_000));
        let s1 = a.next_seq();
        a.commit_decoded(300, Some(5_000));
        let s2 = a.next_seq();
        assert_eq!(
            a.status(),
            (300, 0),
            "received counts as written, not flushed"
        );
        assert!(!a.behind());
        a.acknowledge(200, s1);
        assert!(!a.all_acknowledged());
        assert_eq!(a.status(), (300, 200));
        assert!(a.behind());
        a.confirm(200);
        assert_eq!((a.confirmed(), a.lag_bytes()), (200, 100));
        assert_eq!(
            a.lag_secs(9_000),
            4,
            "the commit at 5 s is the oldest unconfirmed"
        );
        a.acknowledge(300, s2);
        assert!(a.all_acknowledged());
        a.confirm(a.status().1);
        assert_eq!((a.lag_bytes(), a.lag_secs(9_000)), (0, 0));
    }

    #[test]
    fn keepalives_advance_only_with_nothing_in_flight() {
        let mut a = Acks::default();
        a.start(100);
        let s = a.next_seq();
        // An emitted batch is not acknowledged yet: the keepalive's WAL end is received,
        // but neither decoded nor durable.
        a.keepalive(500, true);
        assert_eq!((a.decoded(), a.received(), a.status().1), (100, 500, 0));
        a.acknowledge(100, s);
        // Rows pending in the stream (a transaction being read) hold it back too.
        a.keepalive(600, false);
        assert_eq!((a.decoded(), a.status().1), (100, 100));
        a.keepalive(700, true);
        assert_eq!((a.decoded(), a.status()), (700, (700, 700)));
        // Idle with nothing in flight: what was decoded becomes durable.
        a.commit_decoded(800, None);
        a.idle(false);
        assert_eq!(a.status().1, 700);
        a.idle(true);
        assert_eq!(a.status().1, 800);
    }

    #[test]
    fn commits_within_a_second_share_a_lag_entry() {
        let mut a = Acks::default();
        for (i, t) in [0, 300, 900, 1_500, 1_600].into_iter().enumerate() {
            a.commit_decoded(10 * (i as u64 + 1), Some(t));
        }
        assert_eq!(a.unconfirmed, VecDeque::from(vec![(30, 0), (50, 1_500)]));
        a.confirm(30);
        assert_eq!(a.lag_secs(4_000), 2);
        // A commit whose Begin was not seen has no commit time: it moves the position,
        // not the lag.
        a.commit_decoded(60, None);
        assert_eq!((a.decoded(), a.unconfirmed.len()), (60, 1));
    }
}
