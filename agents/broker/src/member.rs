//! `--member K/M`: agents that share a topic without a group coordinator
//! (the embedded broker, a Fluvio cluster) split its records among
//! themselves by key, with nothing but their own K and M to go on.
//!
//! Member K of M reads every partition under a consumer id of its own and
//! handles only the records whose key hashes to it; it skips the others and
//! commits past them. So every keyed record is handled by exactly one
//! member, the split is even however many partitions there are (three
//! members on four partitions each take a third, where owning whole
//! partitions would give one of them half), and a member can be killed and
//! restarted on its own. Records without a key go to member 1.
//!
//! The cost: each member reads every record of the topic, and a member's
//! offsets are its own, so a fleet that changes M starts its new members
//! from the beginning of the log (nothing is lost or stored twice; work
//! already done is done again).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;

use super::{Batch, BrokerError, Consumer};

/// Which share of the keys an agent handles: member `index` (from 1) of `of`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    index: u32,
    of: u32,
}

impl Default for Member {
    /// The only member: every record.
    fn default() -> Self {
        Self::ALONE
    }
}

impl Member {
    pub const ALONE: Self = Self { index: 1, of: 1 };

    /// Member `index` (from 1) of `of`.
    pub fn new(index: u32, of: u32) -> Result<Self, MemberError> {
        if of == 0 {
            return Err(MemberError(
                "there must be at least one member (M > 0)".into(),
            ));
        }
        if index == 0 || index > of {
            return Err(MemberError(format!(
                "member {index} of {of}: K counts from 1 to M"
            )));
        }
        Ok(Self { index, of })
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    pub fn of(&self) -> u32 {
        self.of
    }

    pub fn is_alone(&self) -> bool {
        self.of == 1
    }

    /// Whether a record with `key` is this member's to handle.
    pub fn owns(&self, key: Option<&[u8]>) -> bool {
        let slot = match key {
            Some(key) => fnv1a(key) % u64::from(self.of),
            None => 0,
        };
        slot == u64::from(self.index - 1)
    }

    /// The consumer id this member commits under: `base` itself for the
    /// only member, `base-m2of3` for member 2 of 3.
    pub fn consumer_id(&self, base: &str) -> String {
        if self.is_alone() {
            base.to_string()
        } else {
            format!("{base}-m{}of{}", self.index, self.of)
        }
    }

    /// `consumer` yielding only this member's records (itself when alone).
    pub fn filter(&self, consumer: Box<dyn Consumer>) -> Box<dyn Consumer> {
        if self.is_alone() {
            consumer
        } else {
            Box::new(MemberConsumer {
                inner: consumer,
                member: *self,
            })
        }
    }

    /// Keep this member's records of `batch`, with their positions.
    fn keep_own(&self, batch: &mut Batch) {
        let owned: Vec<bool> = batch
            .records
            .iter()
            .map(|r| self.owns(r.key.as_deref()))
            .collect();
        if batch.positions.len() == batch.records.len() {
            let mut keep = owned.iter();
            batch
                .positions
                .retain(|_| *keep.next().expect("one flag a record"));
        }
        let mut keep = owned.iter();
        batch
            .records
            .retain(|_| *keep.next().expect("one flag a record"));
    }
}

/// 64-bit FNV-1a: stable across builds and platforms, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.of)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MemberError(String);

impl FromStr for Member {
    type Err = MemberError;

    /// `K/M`, e.g. `2/3`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parsed = text
            .split_once('/')
            .and_then(|(k, m)| Some((k.trim().parse().ok()?, m.trim().parse().ok()?)));
        match parsed {
            Some((index, of)) => Self::new(index, of),
            None => Err(MemberError(format!(
                "{text:?} is not K/M (member K of M, e.g. 2/3)"
            ))),
        }
    }
}

/// A consumer that hands on only one member's records. Skipped records are
/// done as soon as they are read: the batch's `next` still moves past them.
struct MemberConsumer {
    inner: Box<dyn Consumer>,
    member: Member,
}

#[async_trait]
impl Consumer for MemberConsumer {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Batch, BrokerError> {
        let mut batch = self.inner.next_batch(max, wait).await?;
        self.member.keep_own(&mut batch);
        Ok(batch)
    }

    async fn commit(&mut self, next: u64) -> Result<(), BrokerError> {
        self.inner.commit(next).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Record;

    fn keys(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| format!("question-{i}").into_bytes())
            .collect()
    }

    #[test]
    fn every_key_has_exactly_one_member() {
        for of in 1..=5 {
            let members: Vec<Member> = (1..=of).map(|k| Member::new(k, of).unwrap()).collect();
            for key in keys(500) {
                let owners = members.iter().filter(|m| m.owns(Some(&key))).count();
                assert_eq!(owners, 1, "key {key:?} among {of}");
            }
            let unkeyed = members.iter().filter(|m| m.owns(None)).count();
            assert_eq!(unkeyed, 1);
            assert!(
                members[0].owns(None),
                "member 1 takes records without a key"
            );
        }
    }

    #[test]
    fn the_split_is_even_whatever_the_partitions() {
        let of = 3;
        let keys = keys(30_000);
        for k in 1..=of {
            let member = Member::new(k, of).unwrap();
            let share = keys.iter().filter(|key| member.owns(Some(key))).count();
            // A third each, within 3% of it.
            assert!(
                (9_700..=10_300).contains(&share),
                "member {member} owns {share} of 30,000"
            );
        }
    }

    #[test]
    fn parses_k_of_m_and_names_what_is_wrong() {
        assert_eq!("2/3".parse::<Member>().unwrap(), Member::new(2, 3).unwrap());
        assert_eq!(" 1 / 1 ".parse::<Member>().unwrap(), Member::ALONE);
        let error = |text: &str| text.parse::<Member>().unwrap_err().to_string();
        assert_eq!(error("0/3"), "member 0 of 3: K counts from 1 to M");
        assert_eq!(error("4/3"), "member 4 of 3: K counts from 1 to M");
        assert_eq!(error("1/0"), "there must be at least one member (M > 0)");
        assert!(error("two").contains("is not K/M"), "{}", error("two"));
        assert!(error("2/x").contains("\"2/x\""), "{}", error("2/x"));
    }

    #[test]
    fn consumer_ids_are_per_member_except_for_the_only_one() {
        assert_eq!(Member::ALONE.consumer_id("llm-agent"), "llm-agent");
        assert_eq!(
            Member::new(2, 3).unwrap().consumer_id("llm-agent"),
            "llm-agent-m2of3"
        );
    }

    #[test]
    fn a_filtered_batch_keeps_its_positions_and_its_end() {
        let member = Member::new(1, 2).unwrap();
        let records: Vec<Record> = keys(40)
            .into_iter()
            .map(|k| Record::keyed(k, b"v".to_vec()))
            .collect();
        let mut batch = Batch {
            positions: (1..=40).collect(),
            records: records.clone(),
            next: 40,
            end: Some(90),
        };
        member.keep_own(&mut batch);
        let expected: Vec<(u64, Record)> = (1..=40)
            .zip(records)
            .filter(|(_, r)| member.owns(r.key.as_deref()))
            .collect();
        assert!(!expected.is_empty() && expected.len() < 40);
        let kept: Vec<(u64, Record)> = batch.positions.into_iter().zip(batch.records).collect();
        assert_eq!(kept, expected, "each record keeps its own position");
        assert_eq!(
            (batch.next, batch.end),
            (40, Some(90)),
            "skipped ones are passed"
        );
    }
}
