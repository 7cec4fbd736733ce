//! Partitions: tenants spread over a fixed number of partitions, each led by one replica at a
//! time (see docs/operations.md, Scaling).
//!
//! A tenant's partition is the 32-bit FNV-1a hash of its id (its UTF-8 bytes) modulo the
//! partition count: the hash NATS's `{{partition(n, 1)}}` subject transform computes, so the
//! PBX stream files each channel fact under its tenant's partition (`…channel.<k>.…`) and a
//! partition's leader reads its own facts only. PostgreSQL computes the same
//! (`cc_partition(tenant, count)`, migration 8 of the event store), so the store reads one
//! partition's events itself. The count is chosen once per deployment (the store refuses a
//! replica started with another): a tenant moves only when the count changes.

use std::fmt;

/// One of `count` partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition {
    pub index: u32,
    pub count: u32,
}

/// Where a tenant's events go with `count` partitions.
pub fn of(tenant: &str, count: u32) -> u32 {
    fnv1a(tenant.as_bytes()) % count.max(1)
}

/// 32-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h: u32, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

impl Partition {
    /// The one partition of a deployment that is not partitioned.
    pub const WHOLE: Partition = Partition { index: 0, count: 1 };

    /// Every partition of `count`.
    pub fn all(count: u32) -> impl Iterator<Item = Partition> {
        let count = count.max(1);
        (0..count).map(move |index| Partition { index, count })
    }

    pub fn contains(&self, tenant: &str) -> bool {
        self.count <= 1 || of(tenant, self.count) == self.index
    }

    /// The partition's name beside a component's own (`queue-router` → `queue-router/p3`);
    /// the whole store keeps the name alone, as before partitions.
    pub fn name(&self, base: &str) -> String {
        if self.count <= 1 {
            base.to_string()
        } else {
            format!("{base}/p{}", self.index)
        }
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenants_partition_is_fixed_by_its_id_and_the_count() {
        // FNV-1a("demo") = 2935829814 (as NATS's partition transform files "demo" under
        // 6 of 8: the PBX stream test checks it against the server).
        assert_eq!(fnv1a(b"demo"), 2935829814);
        assert_eq!(fnv1a(b""), 0x811c_9dc5);
        assert_eq!(of("demo", 1), 0);
        assert_eq!(of("demo", 64), 2935829814 % 64);
        assert_eq!(of("demo", 8), 6);
        assert!(Partition::WHOLE.contains("anyone"));
        let p = Partition {
            index: of("demo", 8),
            count: 8,
        };
        assert!(p.contains("demo"));
        assert!(!Partition {
            index: (p.index + 1) % 8,
            count: 8
        }
        .contains("demo"));
        assert_eq!(p.name("queue-router"), format!("queue-router/p{}", p.index));
        assert_eq!(Partition::WHOLE.name("queue-router"), "queue-router");
        // Tenants spread over every partition.
        let mut seen = [0u32; 8];
        for i in 0..800 {
            seen[of(&format!("tenant-{i}"), 8) as usize] += 1;
        }
        assert!(seen.iter().all(|n| *n > 60), "{seen:?}");
    }
}
