//! The faults llm-sim injects, shaped like the real APIs' replies.

use rand::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum FaultKind {
    /// 503 Service Unavailable: the server is overloaded.
    #[value(name = "503")]
    Unavailable,
    /// 500 Internal Server Error.
    #[value(name = "500")]
    Internal,
    /// 429 rate limit (`rate_limit_exceeded`) with `Retry-After`.
    #[value(name = "429")]
    RateLimit,
    /// 429 `insufficient_quota`: the account's quota is spent.
    Quota,
    /// The request hangs until the client times out.
    Timeout,
    /// 200 with a body that is not valid JSON.
    Malformed,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Unavailable,
        FaultKind::Internal,
        FaultKind::RateLimit,
        FaultKind::Quota,
        FaultKind::Timeout,
        FaultKind::Malformed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Unavailable => "503",
            FaultKind::Internal => "500",
            FaultKind::RateLimit => "429",
            FaultKind::Quota => "quota",
            FaultKind::Timeout => "timeout",
            FaultKind::Malformed => "malformed",
        }
    }

    pub fn index(self) -> usize {
        FaultKind::ALL
            .iter()
            .position(|k| *k == self)
            .expect("listed in ALL")
    }
}

/// Whether this request fails, and how.
pub fn draw(rng: &mut impl Rng, rate: f64, kinds: &[FaultKind]) -> Option<FaultKind> {
    if kinds.is_empty() || rate <= 0.0 || !rng.gen_bool(rate.min(1.0)) {
        return None;
    }
    Some(kinds[rng.gen_range(0..kinds.len())])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn the_fault_rate_is_honoured() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let n = 20_000;
        let faults = (0..n)
            .filter(|_| draw(&mut rng, 0.3, &FaultKind::ALL).is_some())
            .count();
        let share = faults as f64 / n as f64;
        assert!((share - 0.3).abs() < 0.02, "{share}");
        assert_eq!(draw(&mut rng, 1.0, &[]), None);
        assert_eq!(
            draw(&mut rng, 1.0, &[FaultKind::Quota]),
            Some(FaultKind::Quota)
        );
    }
}
