//! A coupon's stock spread over shards, so that one hot coupon is decided on
//! several Redis masters (docs/design/sharding.md).
//!
//! Each shard is a full set of the coupon's keys under a hash tag of its own:
//! its stock, its holders, its outbox. A customer always goes to one home
//! shard, so the duplicate check stays one atomic script in one slot. A shard
//! that runs out takes units from another by a transfer that both sides
//! record, and `SOLD_OUT` is answered only once a survey of every shard saw
//! no stock and nothing in flight at one moment (`Survey`).

use std::fmt;
use std::str::FromStr;

use crate::{CouponId, CustomerId};

/// One shard of a coupon: where a set of its keys, its outbox among them,
/// lives. Written `<coupon>` for the first shard (as coupons were before
/// shards, so what Redis recorded then still reads) and `<coupon>:<shard>`
/// for the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CouponShard {
    pub coupon: CouponId,
    pub shard: u16,
}

impl CouponShard {
    /// The first shard: all of an unsharded coupon.
    pub fn first(coupon: CouponId) -> Self {
        Self { coupon, shard: 0 }
    }

    /// Every shard of a coupon of `shards` (at least its first).
    pub fn all(coupon: CouponId, shards: u16) -> impl Iterator<Item = CouponShard> {
        (0..shards.max(1)).map(move |shard| CouponShard { coupon, shard })
    }
}

impl fmt::Display for CouponShard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.shard {
            0 => write!(f, "{}", self.coupon),
            shard => write!(f, "{}:{shard}", self.coupon),
        }
    }
}

impl FromStr for CouponShard {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        let (coupon, shard) = match text.split_once(':') {
            Some((coupon, shard)) => (coupon, shard.parse().map_err(|_| ())?),
            None => (text, 0),
        };
        let coupon = coupon.parse().map_err(|_| ())?;
        Ok(Self { coupon, shard })
    }
}

/// The most shards a coupon may have: more than the masters of any cluster
/// this runs on, and few enough that a survey stays a handful of reads.
pub const MAX_SHARDS: u16 = 64;

/// The shard a customer's requests always go to, out of `shards` (at least 1).
///
/// A fixed mix of the id (SplitMix64's finaliser), so customers with
/// consecutive or patterned ids spread evenly, and every replica and
/// version agrees.
pub fn home_shard(customer: CustomerId, shards: u16) -> u16 {
    let mut x = customer.get() as u64;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x % u64::from(shards.max(1))) as u16
}

/// Each shard's share of `total` units: as even as can be, the first shards
/// taking one more when it does not divide.
pub fn split_stock(total: i64, shards: u16) -> Vec<i64> {
    let shards = i64::from(shards.max(1));
    let total = total.max(0);
    (0..shards).map(|shard| total / shards + i64::from(shard < total % shards)).collect()
}

/// How many units an empty shard takes from a donor holding `donor_stock`
/// when it needs `wanted` now: what it needs, or half the donor's stock when
/// that is more, so that a shard drained by its customers refills in a few
/// transfers rather than one per request. Never more than the donor holds.
pub fn transfer_size(donor_stock: i64, wanted: i64) -> i64 {
    wanted.max(donor_stock / 2).min(donor_stock).max(0)
}

/// What a donor shard records of a transfer it took units for, until the
/// receiver has them: `<receiver>:<units>:<epoch>` (written by coupon-api's
/// `take.lua`, read back by its refill and by coupon-reconcile, which counts
/// the units in flight as stock). The epoch is the rebuild the units were
/// taken under, and may itself hold colons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRecord {
    pub receiver: u16,
    pub units: i64,
    pub epoch: String,
}

impl FromStr for TransferRecord {
    type Err = ParseTransferRecordError;

    fn from_str(record: &str) -> Result<Self, Self::Err> {
        let mut parts = record.splitn(3, ':');
        let mut next = || parts.next().ok_or(ParseTransferRecordError);
        let receiver = next()?.parse().map_err(|_| ParseTransferRecordError)?;
        let units = next()?.parse().map_err(|_| ParseTransferRecordError)?;
        let epoch = next()?.to_owned();
        Ok(Self { receiver, units, epoch })
    }
}

/// A transfer record that is not `<receiver>:<units>:<epoch>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a transfer record is <receiver>:<units>:<epoch>")]
pub struct ParseTransferRecordError;

/// One shard as a survey reads it, in one read of its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShardReading {
    pub stock: i64,
    /// Bumped by every change that adds units to the shard (a transfer
    /// received, a unit returned, stock added, a rebuild), never reset.
    pub inflow: i64,
    /// Transfers this shard gave units to and has not seen received.
    pub open_transfers: u32,
    /// Being rebuilt: its stock says nothing yet.
    pub fenced: bool,
}

/// What an empty home shard does next, from one reading of every shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SurveyStep {
    /// A shard is being rebuilt: answer as for a fenced coupon (`503`).
    Fenced,
    /// The home shard holds stock again (another replica refilled it):
    /// decide again there.
    Retry,
    /// Take units from this shard, the richest.
    TakeFrom(u16),
    /// Units are in flight: finish the open transfers, then survey again.
    FinishTransfers,
    /// No stock and nothing in flight in this reading; sold out if a second
    /// reading of every shard's inflow finds none changed (`confirms_sold_out`).
    Confirm,
}

/// The next step for `home`, given a reading of every shard (indexed by shard).
pub fn survey_step(home: u16, readings: &[ShardReading]) -> SurveyStep {
    if readings.iter().any(|reading| reading.fenced) {
        return SurveyStep::Fenced;
    }
    if readings.get(usize::from(home)).is_some_and(|reading| reading.stock > 0) {
        return SurveyStep::Retry;
    }
    let richest = readings.iter().enumerate().filter(|(_, reading)| reading.stock > 0).max_by_key(|(_, r)| r.stock);
    if let Some((shard, _)) = richest {
        return SurveyStep::TakeFrom(shard as u16);
    }
    if readings.iter().any(|reading| reading.open_transfers > 0) {
        return SurveyStep::FinishTransfers;
    }
    SurveyStep::Confirm
}

/// Whether the coupon was sold out: a first reading found every shard empty
/// with no transfer open (`SurveyStep::Confirm`), and a second reading, taken
/// after the whole first one, finds no shard's inflow changed.
///
/// Why this is exact although the shards are read one by one: stock only
/// grows through inflow. Take the moment between the two passes. Each shard
/// read empty before it and gained nothing until after it, so it was empty
/// then. A unit in flight then had left its donor, whose first read either
/// came after (and saw the transfer open) or before (and saw the unit in
/// stock); neither passed the first reading. So at that moment no unit was
/// anywhere but with a holder.
pub fn confirms_sold_out(first: &[ShardReading], second_inflows: &[i64]) -> bool {
    first.len() == second_inflows.len()
        && first.iter().all(|reading| reading.stock <= 0 && reading.open_transfers == 0 && !reading.fenced)
        && first.iter().zip(second_inflows).all(|(reading, inflow)| reading.inflow == *inflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer(id: i64) -> CustomerId {
        CustomerId::new(id).unwrap()
    }

    fn reading(stock: i64, inflow: i64, open_transfers: u32) -> ShardReading {
        ShardReading { stock, inflow, open_transfers, fenced: false }
    }

    #[test]
    fn a_shard_reads_back_as_written_and_the_first_as_a_bare_coupon_id() {
        let coupon = CouponId::new(42).unwrap();
        for shard in [0, 1, 63] {
            let written = CouponShard { coupon, shard }.to_string();
            assert_eq!(written.parse::<CouponShard>(), Ok(CouponShard { coupon, shard }));
        }
        assert_eq!(CouponShard::first(coupon).to_string(), "42");
        assert_eq!("42".parse::<CouponShard>(), Ok(CouponShard::first(coupon)));
        for bad in ["", "x", "42:", "42:x", "0", "-1:1", "42:1:1"] {
            assert!(bad.parse::<CouponShard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn one_shard_is_everyones_home() {
        for id in [1, 2, 999, i64::MAX] {
            assert_eq!(home_shard(customer(id), 1), 0);
        }
    }

    #[test]
    fn consecutive_customers_spread_evenly_over_the_shards() {
        for shards in [2u16, 3, 7, 64] {
            let mut counts = vec![0u32; usize::from(shards)];
            for id in 1..=256_000 {
                counts[usize::from(home_shard(customer(id), shards))] += 1;
            }
            let even = 256_000 / u32::from(shards);
            for count in counts {
                assert!(count.abs_diff(even) * 10 < even, "{shards} shards: {count} against {even}");
            }
        }
    }

    #[test]
    fn a_customers_home_never_changes() {
        // Pinned: a new mix would send customers to shards that do not hold them.
        let homes: Vec<u16> = (1..=8).map(|id| home_shard(customer(id), 3)).collect();
        assert_eq!(homes, [1, 1, 2, 2, 0, 1, 1, 1]);
    }

    #[test]
    fn the_split_adds_up_and_differs_by_at_most_one() {
        for (total, shards) in [(10, 3), (2, 5), (0, 4), (10_000, 1), (7, 7)] {
            let split = split_stock(total, shards);
            assert_eq!(split.len(), usize::from(shards));
            assert_eq!(split.iter().sum::<i64>(), total);
            assert!(split.iter().max().unwrap() - split.iter().min().unwrap() <= 1, "{split:?}");
        }
        assert_eq!(split_stock(10, 3), [4, 3, 3]);
    }

    #[test]
    fn a_transfer_record_reads_back_with_an_epoch_that_may_hold_colons() {
        let record: TransferRecord = "2:15:fence:abc".parse().unwrap();
        assert_eq!(record, TransferRecord { receiver: 2, units: 15, epoch: "fence:abc".into() });
        assert!("2:".parse::<TransferRecord>().is_err());
        assert!("x:1:".parse::<TransferRecord>().is_err());
        assert!("2:many:e".parse::<TransferRecord>().is_err());
    }

    #[test]
    fn a_transfer_takes_what_is_wanted_or_half_and_never_more_than_there_is() {
        assert_eq!(transfer_size(100, 1), 50);
        assert_eq!(transfer_size(100, 80), 80);
        assert_eq!(transfer_size(3, 10), 3);
        assert_eq!(transfer_size(1, 1), 1);
        assert_eq!(transfer_size(0, 5), 0);
    }

    #[test]
    fn the_survey_takes_from_the_richest_finishes_transfers_and_only_then_confirms() {
        let empty = reading(0, 4, 0);
        assert_eq!(survey_step(0, &[empty, reading(3, 1, 0), reading(9, 2, 0)]), SurveyStep::TakeFrom(2));
        assert_eq!(survey_step(0, &[reading(2, 5, 0), reading(9, 2, 0)]), SurveyStep::Retry);
        assert_eq!(survey_step(1, &[empty, empty, reading(0, 0, 1)]), SurveyStep::FinishTransfers);
        assert_eq!(survey_step(1, &[empty, empty, empty]), SurveyStep::Confirm);
        let fenced = ShardReading { fenced: true, ..empty };
        assert_eq!(survey_step(0, &[empty, reading(5, 0, 0), fenced]), SurveyStep::Fenced);
    }

    #[test]
    fn sold_out_needs_two_readings_that_agree() {
        let first = [reading(0, 4, 0), reading(0, 7, 0), reading(0, 1, 0)];
        assert!(confirms_sold_out(&first, &[4, 7, 1]));
        assert!(!confirms_sold_out(&first, &[4, 8, 1]), "a shard received units in between");
        assert!(!confirms_sold_out(&first, &[4, 7]), "a shard not read twice");
        assert!(!confirms_sold_out(&[reading(0, 4, 1), reading(0, 7, 0)], &[4, 7]), "a transfer in flight");
        assert!(!confirms_sold_out(&[reading(1, 4, 0), reading(0, 7, 0)], &[4, 7]), "stock left");
    }
}
