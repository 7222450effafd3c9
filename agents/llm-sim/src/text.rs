//! Answer text of a chosen closeness to the reference: each word of the
//! reference is kept with probability `q` and otherwise replaced by an
//! unrelated word, so the lexical score of the answer comes out near `q`.

use std::str::FromStr;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Beta, Distribution};

/// The distribution of `q`, the share of reference words an answer keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Quality {
    /// `uniform:LO,HI`
    Uniform(f64, f64),
    /// `beta:A,B`
    Beta(f64, f64),
    /// `fixed:Q`
    Fixed(f64),
}

impl Quality {
    pub fn sample(&self, rng: &mut impl Rng) -> f64 {
        let q = match *self {
            Quality::Uniform(lo, hi) if hi > lo => rng.gen_range(lo..hi),
            Quality::Uniform(lo, _) => lo,
            Quality::Beta(a, b) => Beta::new(a, b).map_or(0.5, |d| d.sample(rng)),
            Quality::Fixed(q) => q,
        };
        q.clamp(0.0, 1.0)
    }
}

impl FromStr for Quality {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("bad quality {s:?}: use uniform:LO,HI, beta:A,B or fixed:Q (values from 0 to 1; A, B > 0)")
        };
        let (kind, args) = s.split_once(':').ok_or_else(bad)?;
        let nums: Vec<f64> = args
            .split(',')
            .map(|n| n.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| bad())?;
        let unit = |x: f64| (0.0..=1.0).contains(&x);
        match (kind, nums.as_slice()) {
            ("uniform", &[lo, hi]) if unit(lo) && unit(hi) && lo <= hi => {
                Ok(Quality::Uniform(lo, hi))
            }
            ("beta", &[a, b]) if a > 0.0 && b > 0.0 => Ok(Quality::Beta(a, b)),
            ("fixed", &[q]) if unit(q) => Ok(Quality::Fixed(q)),
            _ => Err(bad()),
        }
    }
}

/// Words that share nothing with any reference in the sample set.
const FILLER: &[&str] = &[
    "quasar",
    "marmalade",
    "trombone",
    "glacierly",
    "pixelated",
    "zephyr",
    "cobblestone",
    "kaleidoscope",
    "umbrella",
    "xylophone",
    "lantern",
    "saffron",
    "tundra",
    "velvet",
    "walrus",
    "origami",
    "nebula",
    "paprika",
    "quokka",
    "rhubarb",
    "sardine",
    "tapestry",
    "ukulele",
    "vortex",
    "wombat",
    "yodel",
    "zeppelin",
    "armadillo",
    "bagpipe",
    "cactus",
    "dandelion",
    "eggplant",
    "flamingo",
    "gargoyle",
    "harmonica",
    "iguana",
    "jellybean",
    "kazoo",
    "lemonade",
    "meringue",
    "narwhal",
    "octopus",
    "pelican",
    "quiche",
    "raccoon",
    "snorkel",
    "teapot",
    "unicycle",
    "vinaigrette",
    "waffle",
];

/// The generator of one request's text: the same simulator seed, request
/// seed and prompt give the same generator (FNV-1a over the three, so it
/// does not change with the Rust version).
pub fn request_rng(sim_seed: u64, request_seed: Option<u64>, prompt: &str) -> StdRng {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let seed_bytes = request_seed.map_or([0xff; 9], |s| {
        let mut b = [0; 9];
        b[1..].copy_from_slice(&s.to_le_bytes());
        b
    });
    for byte in sim_seed
        .to_le_bytes()
        .iter()
        .chain(&seed_bytes)
        .chain(prompt.as_bytes())
    {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
    }
    StdRng::seed_from_u64(hash)
}

/// An answer that keeps each word of `reference` with probability `q`.
pub fn answer(reference: &str, q: f64, rng: &mut impl Rng) -> String {
    let words: Vec<&str> = reference
        .split_whitespace()
        .map(|w| {
            if rng.gen_bool(q) {
                w
            } else {
                FILLER[rng.gen_range(0..FILLER.len())]
            }
        })
        .collect();
    words.join(" ")
}

/// The reply to a question the simulator does not know.
pub fn unknown(rng: &mut impl Rng) -> String {
    (0..24)
        .map(|_| FILLER[rng.gen_range(0..FILLER.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualities_parse_and_reject_nonsense() {
        assert_eq!("uniform:0.1,0.9".parse(), Ok(Quality::Uniform(0.1, 0.9)));
        assert_eq!("beta:2,5".parse(), Ok(Quality::Beta(2.0, 5.0)));
        assert_eq!("fixed:1".parse(), Ok(Quality::Fixed(1.0)));
        for bad in ["uniform:0.9,0.1", "fixed:2", "beta:0,1", "gauss:1", "fixed"] {
            assert!(bad.parse::<Quality>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_score_tracks_the_quality() {
        let reference = "Water expands as it freezes so ice is less dense than the liquid \
            and floats on lakes, which insulates the water below in winter for fish.";
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mean = |q: f64, rng: &mut rand::rngs::StdRng| {
            (0..200)
                .map(|_| {
                    answerloop_scoring::lexical::score(&answer(reference, q, rng), reference) as f64
                })
                .sum::<f64>()
                / 200.0
        };
        let (low, mid, high) = (
            mean(0.1, &mut rng),
            mean(0.5, &mut rng),
            mean(0.9, &mut rng),
        );
        assert!(low < mid && mid < high, "{low} {mid} {high}");
        assert!(
            (answerloop_scoring::lexical::score(&answer(reference, 1.0, &mut rng), reference)
                - 1.0)
                .abs()
                < 1e-6
        );
    }

    #[test]
    fn a_request_draws_the_same_text_whatever_else_was_drawn() {
        let reference = "Ice floats because water expands as it freezes.";
        let draw = |seed, prompt| answer(reference, 0.5, &mut request_rng(7, seed, prompt));
        assert_eq!(draw(Some(1), "why"), draw(Some(1), "why"));
        // A later attempt's seed, another prompt or no seed at all: other text.
        assert_ne!(draw(Some(1), "why"), draw(Some(2), "why"));
        assert_ne!(draw(Some(1), "why"), draw(Some(1), "why?"));
        assert_ne!(draw(Some(0), "why"), draw(None, "why"));
    }
}
