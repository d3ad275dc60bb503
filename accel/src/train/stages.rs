//! Stage schedules on one device: which stage each sample of a step trains.
//!
//! - `random`: one stage per step, uniform (the authors' DPM-Solver code).
//! - `round-robin`: stage = step mod n.
//! - `all`: every stage each step on the whole batch, losses summed, one optimiser step (Algorithm 4).
//! - `proportional`: one stage per step drawn with the mass of the training noise distribution in it (the
//!   authors' EDM code: one σ draw picks the stage).
//! - `mixed`: every batch holds samples of all stages (sample i trains stage (i + step) mod n); the shared
//!   encoder runs once on the whole batch and each decoder on its own samples.

use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageSchedule {
    Random,
    RoundRobin,
    All,
    Proportional,
    Mixed,
}

impl StageSchedule {
    pub const NAMES: &'static str = "random, round-robin, all, proportional, mixed";

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "random" => Self::Random,
            "round-robin" => Self::RoundRobin,
            "all" => Self::All,
            "proportional" => Self::Proportional,
            "mixed" => Self::Mixed,
            _ => return None,
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Random => "random",
            Self::RoundRobin => "round-robin",
            Self::All => "all",
            Self::Proportional => "proportional",
            Self::Mixed => "mixed",
        }
    }

    /// The passes of one step: each pass is a stage per sample of the batch (one forward/backward each; `all`
    /// has one pass per stage). `probs` are the `proportional` stage probabilities.
    pub fn passes(
        &self,
        n_stages: usize,
        batch: usize,
        step: u64,
        probs: &[f64],
        rng: &mut StdRng,
    ) -> Vec<Vec<usize>> {
        let whole = |k: usize| vec![vec![k; batch]];
        match self {
            Self::Random => whole(rng.random_range(0..n_stages)),
            Self::RoundRobin => whole((step % n_stages as u64) as usize),
            Self::All => (0..n_stages).map(|k| vec![k; batch]).collect(),
            Self::Proportional => {
                let u: f64 = rng.random();
                let total: f64 = probs.iter().sum();
                let mut acc = 0.0;
                let mut k = n_stages - 1;
                for (i, p) in probs.iter().enumerate() {
                    acc += p / total;
                    if u < acc {
                        k = i;
                        break;
                    }
                }
                whole(k)
            }
            Self::Mixed => vec![(0..batch)
                .map(|i| ((i as u64 + step) % n_stages as u64) as usize)
                .collect()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn schedules_assign_the_documented_stages() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(
            StageSchedule::RoundRobin.passes(3, 2, 4, &[], &mut rng),
            vec![vec![1, 1]]
        );
        assert_eq!(
            StageSchedule::All.passes(3, 2, 0, &[], &mut rng),
            vec![vec![0, 0], vec![1, 1], vec![2, 2]]
        );
        assert_eq!(
            StageSchedule::Mixed.passes(3, 4, 1, &[], &mut rng),
            vec![vec![1, 2, 0, 1]]
        );
        // Proportional follows the probabilities (here one stage has all the mass).
        for _ in 0..20 {
            assert_eq!(
                StageSchedule::Proportional.passes(3, 1, 0, &[0.0, 1.0, 0.0], &mut rng),
                vec![vec![1]]
            );
        }
        let mut seen = [0usize; 3];
        for s in 0..300 {
            seen[StageSchedule::Random.passes(3, 1, s, &[], &mut rng)[0][0]] += 1;
        }
        assert!(seen.iter().all(|&c| c > 60), "{seen:?}");
        for name in ["random", "round-robin", "all", "proportional", "mixed"] {
            assert_eq!(StageSchedule::parse(name).unwrap().name(), name);
        }
    }
}
