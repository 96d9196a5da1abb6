//! The records the writer holds between Kafka and PostgreSQL, and when a batch
//! of them closes: at its record limit, or `batch_max_wait_ms` after the
//! batch's first record. The limit starts at `batch_max_records`; every batch
//! that fills up doubles it, up to `batch_ceiling_records`, and a batch the
//! wait closes sets it back: a backlog drains in fewer, larger transactions,
//! a quiet stream keeps the small batches' latency. A backlog's last batch
//! closes as soon as the consumer has caught up with the partition's end: no
//! more records are coming to fill it. Pure logic over explicit instants, so
//! the limits are tested without a clock.

use std::time::{Duration, Instant};

use coupon_domain::{CouponIssuedEvent, EventDecodeError, REQUEST_ID_HEADER};
use rdkafka::message::{BorrowedMessage, Headers, Message};

/// One Kafka record, owned, with its decoding already attempted: a record that
/// does not decode is known to be poison before any transaction starts.
#[derive(Debug)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub event: Result<CouponIssuedEvent, EventDecodeError>,
    /// The HTTP request that issued it, when coupon-api sent it (not the relay).
    pub request_id: Option<String>,
}

impl Record {
    pub fn from_message(message: &BorrowedMessage<'_>) -> Self {
        let payload = message.payload().unwrap_or_default().to_vec();
        let event = CouponIssuedEvent::from_json(&payload);
        Self {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload,
            event,
            request_id: message
                .headers()
                .and_then(|headers| headers.iter().find(|header| header.key == REQUEST_ID_HEADER))
                .and_then(|header| header.value)
                .and_then(|value| std::str::from_utf8(value).ok())
                .map(str::to_string),
        }
    }
}

#[derive(Debug)]
pub struct Batcher<T> {
    base_records: usize,
    ceiling_records: usize,
    /// The open batch's record limit, between the two above.
    max_records: usize,
    max_wait: Duration,
    records: Vec<T>,
    opened_at: Option<Instant>,
    /// The open batch follows full ones and the consumer has reached the end
    /// of what there is to read: it closes without waiting.
    backlog_drained: bool,
}

impl<T> Batcher<T> {
    /// `ceiling_records` below `max_records` counts as `max_records`: no growth.
    pub fn new(max_records: usize, ceiling_records: usize, max_wait: Duration) -> Self {
        Self {
            base_records: max_records,
            ceiling_records: ceiling_records.max(max_records),
            max_records,
            max_wait,
            records: Vec::new(),
            opened_at: None,
            backlog_drained: false,
        }
    }

    /// The record limit of the batch being filled.
    pub fn limit(&self) -> usize {
        self.max_records
    }

    pub fn push(&mut self, record: T, now: Instant) {
        self.opened_at.get_or_insert(now);
        self.records.push(record);
    }

    /// When the open batch closes by time; `None` while there is no batch.
    pub fn deadline(&self) -> Option<Instant> {
        self.opened_at.map(|opened| opened + self.max_wait)
    }

    pub fn is_ready(&self, now: Instant) -> bool {
        self.is_full() || self.backlog_drained || self.deadline().is_some_and(|deadline| now >= deadline)
    }

    /// The consumer has reached the end of a partition. A batch that follows
    /// full ones (its limit has grown) is the backlog's last and closes now;
    /// a quiet stream's batch still waits for its deadline, so a trickle's
    /// records keep sharing transactions.
    pub fn caught_up(&mut self) {
        if !self.records.is_empty() && self.max_records > self.base_records {
            self.backlog_drained = true;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Whether the open batch holds its record limit: nothing more is taken in.
    pub fn is_full(&self) -> bool {
        self.records.len() >= self.max_records
    }

    /// Takes the closed batch: at most `max_records`, oldest first. Records
    /// beyond it open the next batch at `now`.
    pub fn take(&mut self, now: Instant) -> Vec<T> {
        let filled = self.is_full();
        let rest = self.records.split_off(self.records.len().min(self.max_records));
        let batch = std::mem::replace(&mut self.records, rest);
        self.opened_at = (!self.records.is_empty()).then_some(now);
        self.backlog_drained = false;
        self.max_records = if filled { (self.max_records * 2).min(self.ceiling_records) } else { self.base_records };
        batch
    }

    /// Forgets the records `keep` rejects (those of revoked partitions).
    pub fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        self.records.retain(keep);
        if self.records.is_empty() {
            self.opened_at = None;
            self.backlog_drained = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batcher() -> Batcher<u32> {
        Batcher::new(100, 100, Duration::from_millis(500))
    }

    #[test]
    fn many_records_close_by_count() {
        let start = Instant::now();
        let mut batcher = batcher();
        let mut sizes = Vec::new();
        for i in 0..250 {
            batcher.push(i, start);
            if batcher.is_ready(start) {
                sizes.push(batcher.take(start).len());
            }
        }
        assert!(!batcher.is_ready(start), "50 records, no time passed: still open");
        let last = start + Duration::from_millis(500);
        assert!(batcher.is_ready(last));
        sizes.push(batcher.take(last).len());
        assert_eq!(sizes, [100, 100, 50]);
        assert!(batcher.is_empty());
    }

    #[test]
    fn a_trickle_closes_by_the_wait_limit_counted_from_the_first_record() {
        let start = Instant::now();
        let mut batcher = batcher();
        assert_eq!(batcher.deadline(), None, "no batch, no deadline");
        batcher.push(1, start);
        batcher.push(2, start + Duration::from_millis(300));
        assert_eq!(batcher.deadline(), Some(start + Duration::from_millis(500)));
        assert!(!batcher.is_ready(start + Duration::from_millis(499)));
        assert!(batcher.is_ready(start + Duration::from_millis(500)));
        assert_eq!(batcher.take(start + Duration::from_millis(500)), [1, 2]);
        assert_eq!(batcher.deadline(), None);
    }

    #[test]
    fn a_backlog_grows_the_batches_to_the_ceiling_and_a_trickle_shrinks_them_back() {
        let start = Instant::now();
        let mut batcher = Batcher::new(100, 1_000, Duration::from_millis(500));
        for i in 0..5_000 {
            batcher.push(i, start);
        }
        let mut sizes = Vec::new();
        while batcher.is_ready(start) {
            sizes.push(batcher.take(start).len());
        }
        assert_eq!(sizes, [100, 200, 400, 800, 1_000, 1_000, 1_000]);
        assert_eq!(batcher.limit(), 1_000);

        // The 500 left close by the wait: the backlog is gone.
        let later = start + Duration::from_millis(500);
        assert!(batcher.is_ready(later));
        assert_eq!(batcher.take(later).len(), 500);
        assert_eq!(batcher.limit(), 100, "back to the quiet stream's limit");
    }

    #[test]
    fn a_backlog_s_last_batch_closes_once_the_consumer_has_caught_up() {
        let start = Instant::now();
        let mut batcher = Batcher::new(100, 1_000, Duration::from_millis(500));
        for i in 0..150 {
            batcher.push(i, start);
        }
        assert_eq!(batcher.take(start).len(), 100, "full: the limit grows");
        assert!(!batcher.is_ready(start), "50 of 200");
        batcher.caught_up();
        assert!(batcher.is_ready(start), "nothing more to read: no reason to wait");
        assert_eq!(batcher.take(start).len(), 50);
        assert_eq!(batcher.limit(), 100, "the backlog is over");

        batcher.push(1, start);
        batcher.caught_up();
        assert!(!batcher.is_ready(start), "a quiet stream's batch still waits for its deadline");
        assert!(batcher.is_ready(start + Duration::from_millis(500)));
    }

    #[test]
    fn catching_up_with_nothing_held_does_not_close_the_next_batch() {
        let start = Instant::now();
        let mut batcher = Batcher::new(1, 10, Duration::from_millis(500));
        batcher.push(0, start);
        assert_eq!(batcher.take(start).len(), 1, "full: the limit grows to 2");
        batcher.caught_up();
        batcher.push(1, start);
        assert!(!batcher.is_ready(start));
    }

    #[test]
    fn a_ceiling_below_the_limit_means_no_growth() {
        let start = Instant::now();
        let mut batcher = Batcher::new(100, 10, Duration::from_millis(500));
        for i in 0..300 {
            batcher.push(i, start);
        }
        let mut sizes = Vec::new();
        while batcher.is_ready(start) {
            sizes.push(batcher.take(start).len());
        }
        assert_eq!(sizes, [100, 100, 100]);
    }

    #[test]
    fn an_empty_batcher_never_closes() {
        let batcher = batcher();
        assert!(!batcher.is_ready(Instant::now() + Duration::from_secs(3600)));
    }

    #[test]
    fn leftovers_beyond_the_limit_open_the_next_batch() {
        let start = Instant::now();
        let mut batcher = Batcher::new(2, 2, Duration::from_millis(500));
        for i in 0..3 {
            batcher.push(i, start);
        }
        let later = start + Duration::from_millis(100);
        assert_eq!(batcher.take(later), [0, 1]);
        assert_eq!(batcher.deadline(), Some(later + Duration::from_millis(500)));
    }

    #[test]
    fn retaining_nothing_closes_the_batch() {
        let start = Instant::now();
        let mut batcher = batcher();
        batcher.push(1, start);
        batcher.retain(|_| false);
        assert!(batcher.is_empty());
        assert_eq!(batcher.deadline(), None);
    }
}
