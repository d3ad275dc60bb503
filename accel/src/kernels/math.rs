//! Element-wise math for the kernels' inner loops.
//!
//! The logistic function of the fused GroupNorm + SiLU runs once per activation, forward and backward, tens of
//! millions of times per training step. libm's `exp` is a scalar call (in f64 it took ~10 % of a forward
//! pass), so the f32 path uses [`exp_f32`]: branch-free arithmetic that the compiler vectorises. The f64 path
//! (what the finite-difference tests check) keeps the standard library's `exp`.

/// `exp(x)` in f32 to within 2·2⁻²⁴ relative, for any finite `x` (saturating: below −87.3 it returns
/// `exp(−87.3)` ≈ 1.2e-38, above 88.3 `exp(88.3)` ≈ 2.2e38, never 0 or infinity), as straight-line code
/// that vectorises (no branch, no float-to-int conversion: those are scalar in Rust's saturating casts).
///
/// `exp(x) = 2ⁿ·exp(r)` with `n = round(x/ln 2)` and `r = x − n·ln 2 ∈ [−ln2/2, ln2/2]` (Cody–Waite: `ln 2` in
/// two parts, so that `n·ln2_hi` is exact); `exp(r)` by its Taylor polynomial of degree 7 (the remainder
/// `|r|⁸/8! < 5e-9` is below f32's half ulp); `2ⁿ` assembled in the exponent bits.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // 0.693359375: 9 significant bits, n·LN2_HI exact for |n| < 2^15
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2²³: adding and subtracting it rounds to the nearest integer in f32 (|x·log2e| < 2²²).
    const ROUND: f32 = 12_582_912.0;
    // 2²³ + 127: the float 2²³ + k (integer 0 ≤ k < 2²³) holds k in its mantissa bits.
    const BIAS: f32 = 8_388_608.0 + 127.0;
    let x = x.clamp(-87.3, 88.3);
    let n = (x * LOG2E + ROUND) - ROUND; // integer in [−126, 127]
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // 2ⁿ: the biased exponent n + 127 ∈ [1, 254] from the mantissa of 2²³ + n + 127, shifted into place
    // (the shift drops 2²³'s own exponent bits).
    p * f32::from_bits((n + BIAS).to_bits() << 23)
}

/// The logistic function `σ(x) = 1/(1 + e^{−x})` in f32 (through [`exp_f32`]).
#[inline(always)]
pub(crate) fn sigmoid_f32(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against f64 `exp` on a dense sweep of the whole range and at the ends: relative error ≤ 2·2⁻²⁴ (the
    /// correctly rounded result is within one 2⁻²⁴; the last Horner steps and the final product add about one
    /// more; measured 1.68·2⁻²⁴, and 2.9·2⁻²⁴ with the degree-6 coefficient off by 3 %).
    #[test]
    fn exp_matches_f64() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 88.3 {
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            worst = worst.max((got - want).abs() / want);
            x += 0.000_37;
        }
        assert!(
            worst <= 2.0 * f32::EPSILON as f64 / 2.0,
            "worst relative error {worst:e}"
        );
        // Saturation instead of infinity or zero-crossing garbage.
        assert!(exp_f32(1000.0).is_finite() && exp_f32(1000.0) > 2e38);
        assert!(exp_f32(-1000.0) >= 0.0 && exp_f32(-1000.0) < 1e-37);
        assert_eq!(exp_f32(0.0), 1.0);
    }

    /// σ's relative error: exp's (≤ 2·2⁻²⁴, damped by e/(1 + e) ≤ 1) plus one rounding each for the sum and
    /// the quotient: ≤ 4·2⁻²⁴ = 2ε relative; below −87.3 the saturation leaves σ ≈ 1.2e-38 instead of ~0.
    #[test]
    fn sigmoid_matches_f64() {
        let mut x = -120.0f32;
        while x <= 120.0 {
            let want = 1.0 / (1.0 + (-(x as f64)).exp());
            let got = sigmoid_f32(x) as f64;
            let tol = 2.0 * f32::EPSILON as f64 * want + 2e-38;
            assert!((got - want).abs() <= tol, "σ({x}) = {got} vs {want}");
            x += 0.0093;
        }
        assert_eq!(sigmoid_f32(200.0), 1.0);
        assert!(sigmoid_f32(f32::NAN).is_nan());
    }
}
