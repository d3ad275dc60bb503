//! Contiguous segmentations of a grid of G points into n non-empty segments.
//!
//! - [`optimal_segmentation`]: the exact optimum of any additive segment cost, by dynamic programming over
//!   (segments used, last point), O(n·G²) cost evaluations. Used by Algorithm 2.
//! - [`size_constrained_segmentation`]: the authors' `interval_cluster` DP (`DS/cluster.py`, after Go et al.)
//!   with its segment-size limits, used by the Table-4 baselines; see that function.
//!
//! A segmentation is given by its **start indices**: `starts[m]` is the first grid index of segment m + 1
//! (segment 0 always starts at 0), strictly increasing, all in 1..G.

use super::ClusterError;

/// The minimum of Σ_segments `cost(a, b)` (segment = grid indices a..=b) over every split of 0..G into
/// `n` contiguous non-empty segments. Returns (the start indices of segments 1..n, the optimal total).
/// Ties go to the segmentation whose start indices are lexicographically smallest from the last segment
/// backwards (the first minimum found for each last segment's start, scanning upwards).
pub fn optimal_segmentation(
    g: usize,
    n: usize,
    cost: impl Fn(usize, usize) -> f64,
) -> Result<(Vec<usize>, f64), ClusterError> {
    if n < 1 || n > g {
        return Err(ClusterError::TooManyStages {
            stages: n,
            points: g,
        });
    }
    // best[m][j]: minimum cost of splitting 0..=j into m + 1 segments; from[m][j]: start of the last one.
    let mut best = vec![vec![f64::INFINITY; g]; n];
    let mut from = vec![vec![0usize; g]; n];
    for (j, b) in best[0].iter_mut().enumerate() {
        *b = cost(0, j);
    }
    for m in 1..n {
        for j in m..g {
            let (mut bv, mut bs) = (f64::INFINITY, m);
            // The last segment is s..=j; the first m segments cover 0..s, so s ≥ m.
            for s in m..=j {
                let v = best[m - 1][s - 1] + cost(s, j);
                if v < bv {
                    bv = v;
                    bs = s;
                }
            }
            best[m][j] = bv;
            from[m][j] = bs;
        }
    }
    let total = best[n - 1][g - 1];
    if !total.is_finite() {
        return Err(ClusterError::NonFinite("segment cost"));
    }
    let mut starts = vec![0usize; n - 1];
    let mut j = g - 1;
    for m in (1..n).rev() {
        let s = from[m][j];
        starts[m - 1] = s;
        j = s - 1;
    }
    Ok((starts, total))
}

/// Every split of 0..G into n contiguous non-empty segments (as start indices of segments 1..n), for tests.
pub fn all_segmentations(g: usize, n: usize) -> Vec<Vec<usize>> {
    fn rec(next: usize, g: usize, left: usize, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if left == 0 {
            out.push(cur.clone());
            return;
        }
        // Leave room for `left − 1` more starts after this one.
        for s in next..=g - left {
            cur.push(s);
            rec(s + 1, g, left - 1, cur, out);
            cur.pop();
        }
    }
    let mut out = Vec::new();
    if n >= 1 && n <= g {
        rec(1, g, n - 1, &mut Vec::new(), &mut out);
    }
    out
}

/// Σ cost over the segments that `starts` defines on 0..G.
pub fn segmentation_cost(g: usize, starts: &[usize], cost: impl Fn(usize, usize) -> f64) -> f64 {
    let mut edges = vec![0];
    edges.extend_from_slice(starts);
    edges.push(g);
    edges.windows(2).map(|w| cost(w[0], w[1] - 1)).sum()
}

/// The authors' size-constrained segmentation DP (`DS/cluster.py` `interval_cluster`, docs/paper-notes.md §1.5), exactly:
/// G points, k clusters, mi = ⌊G/(2k)⌋, MI = ⌈3G/(2k)⌉;
/// D[i][0] = cost(0..=i); for m ≥ 1 cluster m is t..=i with t ∈ [max(1 + m·mi, i + 1 − MI), i + 1 − mi] and
/// D[i][m] = min_t D[t−1][m−1] + cost(t..=i) (the first minimum in increasing t); at m = k − 1 only
/// i = G − 1 is evaluated. Returns the start indices of clusters 1..k (ascending) and the optimum.
pub fn size_constrained_segmentation(
    g: usize,
    k: usize,
    cost: impl Fn(usize, usize) -> f64,
) -> Result<(Vec<usize>, f64), ClusterError> {
    if k < 2 || 2 * k > g {
        // mi = ⌊G/2k⌋ must be ≥ 1 for the size limits to mean anything.
        return Err(ClusterError::TooManyStages {
            stages: k,
            points: g,
        });
    }
    let mi = g / (2 * k);
    let big = (3 * g).div_ceil(2 * k);
    let mut d = vec![vec![f64::INFINITY; k]; g];
    let mut from = vec![vec![usize::MAX; k]; g];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = cost(0, i);
    }
    for m in 1..k {
        let rows: Vec<usize> = if m == k - 1 {
            vec![g - 1]
        } else {
            (0..g).collect()
        };
        for i in rows {
            let lo = (1 + m * mi).max((i + 1).saturating_sub(big));
            let Some(hi) = (i + 1).checked_sub(mi) else {
                continue;
            };
            let (mut bv, mut bt) = (f64::INFINITY, usize::MAX);
            for t in lo..=hi {
                if t == 0 {
                    continue;
                }
                let v = d[t - 1][m - 1] + cost(t, i);
                if v < bv {
                    bv = v;
                    bt = t;
                }
            }
            d[i][m] = bv;
            from[i][m] = bt;
        }
    }
    let total = d[g - 1][k - 1];
    if !total.is_finite() {
        return Err(ClusterError::NoFeasibleSegmentation {
            stages: k,
            points: g,
        });
    }
    let mut starts = vec![0usize; k - 1];
    let mut i = g - 1;
    for m in (1..k).rev() {
        let t = from[i][m];
        starts[m - 1] = t;
        i = t - 1;
    }
    Ok((starts, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn brute(g: usize, n: usize, cost: &dyn Fn(usize, usize) -> f64) -> f64 {
        all_segmentations(g, n)
            .iter()
            .map(|s| segmentation_cost(g, s, cost))
            .fold(f64::INFINITY, f64::min)
    }

    #[test]
    fn enumeration_counts() {
        // C(G−1, n−1) segmentations.
        assert_eq!(all_segmentations(5, 1), vec![Vec::<usize>::new()]);
        assert_eq!(all_segmentations(5, 2).len(), 4);
        assert_eq!(all_segmentations(7, 3).len(), 15);
        assert_eq!(all_segmentations(4, 4), vec![vec![1, 2, 3]]);
    }

    #[test]
    fn known_optimum() {
        // Points 0,0,0,5,5,9: costs are within-segment spreads; three segments split at the jumps.
        let v = [0.0, 0.0, 0.0, 5.0, 5.0, 9.0];
        let cost = |a: usize, b: usize| {
            let m = v[a..=b].iter().sum::<f64>() / (b - a + 1) as f64;
            v[a..=b].iter().map(|x| (x - m).abs()).sum::<f64>()
        };
        let (starts, total) = optimal_segmentation(6, 3, cost).unwrap();
        assert_eq!(starts, vec![3, 5]);
        assert_eq!(total, 0.0);
        assert!(matches!(
            optimal_segmentation(3, 4, cost),
            Err(ClusterError::TooManyStages { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The DP's optimum equals brute-force enumeration, and its segmentation attains it.
        #[test]
        fn dp_equals_brute_force(
            (g, n, s) in (2usize..10).prop_flat_map(|g| (Just(g), 1..=g, proptest::collection::vec(0.0f64..1.0, g * g)))
        ) {
            let cost = |a: usize, b: usize| {
                let mut c = 0.0;
                for i in a..=b { for j in a..=b { c += s[i * g + j]; } }
                c / ((b - a + 1) * (b - a + 1)) as f64 - 0.3 * (b - a) as f64
            };
            let (starts, total) = optimal_segmentation(g, n, cost).unwrap();
            let bf = brute(g, n, &cost);
            prop_assert!((total - bf).abs() <= 1e-12 * (1.0 + bf.abs()), "dp {total} brute {bf}");
            prop_assert!((segmentation_cost(g, &starts, cost) - total).abs() <= 1e-12 * (1.0 + bf.abs()));
            prop_assert_eq!(starts.len(), n - 1);
            prop_assert!(starts.windows(2).all(|w| w[0] < w[1]));
        }

        /// The size-constrained DP equals brute force restricted to the authors' size limits.
        #[test]
        fn size_constrained_equals_brute_force(
            (g, k, v) in (4usize..16).prop_flat_map(|g| (Just(g), 2..=g / 2, proptest::collection::vec(0.0f64..1.0, g)))
        ) {
            let cost = |a: usize, b: usize| v[a..=b].iter().map(|x| (x - v[crate::cluster::baselines::positional_median(a, b)]).abs()).sum::<f64>();
            let mi = g / (2 * k);
            let big = (3 * g).div_ceil(2 * k);
            // The authors' feasible set: clusters m ≥ 1 have size in [mi, MI] and start at ≥ 1 + m·mi.
            let feasible = |s: &Vec<usize>| {
                let mut edges = s.clone();
                edges.push(g);
                (0..k - 1).all(|m| {
                    let size = edges[m + 1] - edges[m];
                    size >= mi && size <= big && edges[m] > (m + 1) * mi
                })
            };
            let bf = all_segmentations(g, k)
                .into_iter()
                .filter(feasible)
                .map(|s| segmentation_cost(g, &s, cost))
                .fold(f64::INFINITY, f64::min);
            match size_constrained_segmentation(g, k, cost) {
                Ok((starts, total)) => {
                    prop_assert!((total - bf).abs() <= 1e-12 * (1.0 + bf.abs()), "dp {total} brute {bf}");
                    prop_assert!(feasible(&starts));
                }
                Err(_) => prop_assert!(bf.is_infinite()),
            }
        }
    }
}
