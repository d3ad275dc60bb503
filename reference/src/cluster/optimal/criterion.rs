//! The functional similarity D of one draw: the fraction of entries whose difference is within η.

use super::ClusterError;

/// Where functional distances are measured.
///
/// With the `clap` feature it is also the `--space` value of `msd cluster` (help in ASCII in the attributes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Space {
    /// The paper: ε*-prediction space.
    #[cfg_attr(feature = "clap", value(help = "The paper: compare eps* predictions"))]
    Eps,
    /// The authors' code for Algorithm 2: x₀ (posterior-mean) space.
    #[cfg_attr(
        feature = "clap",
        value(help = "The authors' Algorithm-2 code: compare posterior means x0_hat")
    )]
    X0,
}

/// How |difference| is compared with η.
///
/// With the `clap` feature it is also the `--compare` value of `msd cluster`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Comparison {
    /// The paper: |·| ≤ η.
    #[cfg_attr(feature = "clap", value(help = "The paper: |difference| <= eta"))]
    Le,
    /// The authors' code: |·| < η.
    #[cfg_attr(
        feature = "clap",
        value(help = "The authors' code: |difference| < eta")
    )]
    Lt,
}

/// The per-draw similarity D: the fraction of entries with |diff| within η.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Criterion {
    pub eta: f64,
    pub space: Space,
    pub comparison: Comparison,
}

impl Criterion {
    /// Paper defaults: η = 2/256 (on [0, 1] pixels), ε space, ≤.
    pub const PAPER: Criterion = Criterion {
        eta: 2.0 / 256.0,
        space: Space::Eps,
        comparison: Comparison::Le,
    };

    pub(crate) fn check(&self) -> Result<(), ClusterError> {
        if !(self.eta.is_finite() && self.eta > 0.0) {
            return Err(ClusterError::BadParameter {
                name: "eta",
                value: self.eta,
                why: "must be finite and > 0",
            });
        }
        Ok(())
    }

    /// D for one difference vector.
    pub fn fraction(&self, diff: impl Iterator<Item = f64>) -> f64 {
        let (mut hit, mut n) = (0usize, 0usize);
        for v in diff {
            let a = v.abs();
            hit += usize::from(match self.comparison {
                Comparison::Le => a <= self.eta,
                Comparison::Lt => a < self.eta,
            });
            n += 1;
        }
        hit as f64 / n as f64
    }
}
