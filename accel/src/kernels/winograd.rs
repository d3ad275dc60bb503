//! 3×3 "same" convolutions (stride 1, padding 1) by Winograd's minimal filtering F(2×2, 3×3).
//!
//! The output is cut into 2×2 tiles; tile `(ty, tx)` reads the 4×4 input patch `d` at rows `2ty − 1 ..`,
//! columns `2tx − 1 ..` (zero outside the image) and, per output channel `o`, is
//!
//! ```text
//! Y = Aᵀ · [ Σ_c (G·g_oc·Gᵀ) ⊙ (Bᵀ·d_c·B) ] · A
//!
//!      ⎡1  0 −1  0⎤        ⎡1    0   0 ⎤
//! Bᵀ = ⎢0  1  1  0⎥    G = ⎢½    ½   ½ ⎥    Aᵀ = ⎡1 1  1  0⎤
//!      ⎢0 −1  1  0⎥        ⎢½   −½   ½ ⎥         ⎣0 1 −1 −1⎦
//!      ⎣0  1  0 −1⎦        ⎣0    0   1 ⎦
//! ```
//!
//! which in exact arithmetic equals the correlation `y[oy, ox] = Σ_c Σ_{ky,kx} g[ky, kx]·x[oy+ky−1, ox+kx−1]`.
//! The sum over input channels, for each of the 16 positions `ξ` of the transformed tile, is one GEMM:
//! `M_ξ [Cout × tiles] = U_ξ [Cout × Cin] · V_ξ [Cin × tiles]`. That is 16·Cout·Cin multiply-adds per tile
//! of four outputs, against 36 by taps: 2.25 times fewer, for transforms that cost O(channels·pixels).
//!
//! Round-off: the transforms only add and subtract (and halve, which is exact), a few terms each, so the
//! error stays of the order of a direct convolution's; the weight transform is done in f64 and rounded once.
//! The tests bound it against candle's direct convolution.

use std::sync::OnceLock;

use multiversion::multiversion;

use super::blas::Gemm;
use super::scratch::Scratch;
use super::Real;

/// Whether `MSD_WINOGRAD` (read once) lets the 3×3 convolutions run by this algorithm: unset, `on` or `1`
/// (the default); `off` or `0` keeps them on the products by taps, whose round-off is that of a direct
/// convolution.
pub(super) fn enabled() -> candle_core::Result<bool> {
    static ON: OnceLock<Result<bool, String>> = OnceLock::new();
    let on = ON.get_or_init(
        || match std::env::var("MSD_WINOGRAD").unwrap_or_default().as_str() {
            "" | "on" | "1" => Ok(true),
            "off" | "0" => Ok(false),
            other => Err(format!("MSD_WINOGRAD must be on or off, not {other:?}")),
        },
    );
    on.clone().map_err(candle_core::Error::Msg)
}

/// Positions of a transformed 4×4 tile.
pub(super) const POSITIONS: usize = 16;

/// Tiles of an `h × w` output: `⌈h/2⌉ × ⌈w/2⌉` (odd sizes end in a half tile whose extra outputs are dropped).
pub(super) fn tiles(h: usize, w: usize) -> (usize, usize) {
    (h.div_ceil(2), w.div_ceil(2))
}

/// `G·g·Gᵀ` of `n` 3×3 kernels, in f64: `g` holds them tap-major (`[9][n]`, tap `3·ky + kx`), the result
/// is `[16][n]` (position `4i + j` of the transformed tile). Elementwise over the kernels, so it vectorises.
pub(super) fn kernel_tiles(g: &[f64], n: usize) -> Vec<f64> {
    let tap = |t: usize| &g[t * n..][..n];
    // G·g, 4×3, stored by kernel column: `gg[(4c + i)·n ..]` is row i of column c.
    let mut gg = vec![0.0; 12 * n];
    for (c, out) in gg.chunks_exact_mut(4 * n).enumerate() {
        g_combine(tap(c), tap(3 + c), tap(6 + c), split4(out));
    }
    // (G·g)·Gᵀ: the same combination of each row's three columns.
    let mut u = vec![0.0; 16 * n];
    for (i, out) in u.chunks_exact_mut(4 * n).enumerate() {
        let col = |c: usize| &gg[(4 * c + i) * n..][..n];
        g_combine(col(0), col(1), col(2), split4(out));
    }
    u
}

/// `s` cut into four equal parts.
fn split4<T>(s: &mut [T]) -> [&mut [T]; 4] {
    let n = s.len() / 4;
    let (a, rest) = s.split_at_mut(n);
    let (b, rest) = rest.split_at_mut(n);
    let (c, d) = rest.split_at_mut(n);
    [a, b, c, &mut d[..n]]
}

/// Calls `f(c, out)` for each of `channels` channels, `out[ξ]` being channel `c`'s `nt` values in each of
/// the 16 planes of `buf` (`[16][channels × nt]`): what the per-channel transforms write.
fn for_each_channel<T>(
    buf: &mut [T],
    channels: usize,
    nt: usize,
    mut f: impl FnMut(usize, &mut [&mut [T]]),
) {
    let mut planes: Vec<&mut [T]> = buf.chunks_exact_mut(channels * nt).collect();
    for c in 0..channels {
        let mut out: Vec<&mut [T]> = planes.iter_mut().map(|p| &mut p[c * nt..][..nt]).collect();
        f(c, &mut out);
    }
}

/// One application of `G` to three values `(a, b, c)`, elementwise: `a, (a + b + c)/2, (a − b + c)/2, c`.
fn g_combine(a: &[f64], b: &[f64], c: &[f64], out: [&mut [f64]; 4]) {
    let [o0, o1, o2, o3] = out;
    o0.copy_from_slice(a);
    o3.copy_from_slice(c);
    for (k, (p, q)) in o1.iter_mut().zip(o2.iter_mut()).enumerate() {
        *p = 0.5 * (a[k] + b[k] + c[k]);
        *q = 0.5 * (a[k] - b[k] + c[k]);
    }
}

/// `Bᵀ·d·B` of every 4×4 input patch of one batch element `x` (`[Cin × h·w]`) into `v`, laid out
/// `[16][Cin × tiles]`: the right-hand operands of the 16 products. `scratch` holds
/// [`input_scratch`]` (h, w)` values.
fn input_tiles<T: Real>(x: &[T], ci: usize, h: usize, w: usize, v: &mut [T], scratch: &mut [T]) {
    let (th, tw) = tiles(h, w);
    for_each_channel(v, ci, th * tw, |c, out| {
        input_channel(&x[c * h * w..][..h * w], h, w, scratch, out)
    });
}

/// Scratch values of [`input_channel`] for an `h × w` image: four quarter planes and eight sums, each
/// `th × (tw + 1)` (the quarters one row more).
fn input_scratch(h: usize, w: usize) -> usize {
    let (th, tw) = tiles(h, w);
    4 * (th + 1) * (tw + 1) + 8 * th * (tw + 1)
}

/// `Bᵀ·d·B` of the tiles of one channel's plane into `out[ξ]` (`tiles` values each).
///
/// Tile `(ty, tx)` reads padded rows and columns `2ty ..= 2ty + 3`, `2tx ..= 2tx + 3` (padded index =
/// image index + 1). The padded plane is therefore first split into its four quarters by the parity of
/// row and column, `Q[rp][cp][a][b] = padded[2a + rp][2b + cp]`, each `(th + 1) × n` with `n = tw + 1`.
/// Then the patch of tile `(ty, tx)` is `Q[·][·][ty or ty + 1][tx or tx + 1]`, and both passes run
/// along contiguous arrays, so they vectorise: `Bᵀ·d` down the rows over whole quarters at once, `·B`
/// along each tile row. Compiled for AVX2 and AVX-512 and picked at run time, once per channel.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx512dq", "x86_64+avx2+fma"))]
fn input_channel<T: Real>(
    plane: &[T],
    h: usize,
    w: usize,
    scratch: &mut [T],
    out: &mut [&mut [T]],
) {
    let (th, tw) = tiles(h, w);
    let n = tw + 1;
    let (quarters, sums) = scratch.split_at_mut(4 * (th + 1) * n);
    let q = (th + 1) * n;
    // The quarters: [rp][cp], padded row 2a + rp is image row 2a + rp − 1.
    for rp in 0..2 {
        let (even, odd) = quarters[2 * rp * q..][..2 * q].split_at_mut(q);
        for (a, (e, o)) in even
            .chunks_exact_mut(n)
            .zip(odd.chunks_exact_mut(n))
            .enumerate()
        {
            e.fill(T::zero());
            o.fill(T::zero());
            let Some(y) = (2 * a + rp).checked_sub(1).filter(|&y| y < h) else {
                continue;
            };
            // Image column 2k is padded column 2k + 1 (odd quarter, index k); 2k + 1 is even, index k + 1.
            let row = &plane[y * w..][..w];
            let pairs = w / 2;
            for ((pair, ok), ek) in row
                .chunks_exact(2)
                .zip(&mut o[..pairs])
                .zip(&mut e[1..=pairs])
            {
                *ok = pair[0];
                *ek = pair[1];
            }
            if w % 2 == 1 {
                o[pairs] = row[w - 1];
            }
        }
    }
    // Bᵀ·d down the rows, per column parity: rows d0..d3 of tile row ty are quarters (0, ty), (1, ty),
    // (0, ty + 1), (1, ty + 1); t[cp][i] is row i of the result, th × n.
    let len = th * n;
    for cp in 0..2 {
        let quarter = |rp: usize, shift: usize| &quarters[(2 * rp + cp) * q + shift * n..][..len];
        let (d0, d1, d2, d3) = (quarter(0, 0), quarter(1, 0), quarter(0, 1), quarter(1, 1));
        let [t0, t1, t2, t3] = split4(&mut sums[cp * 4 * len..][..4 * len]);
        for k in 0..len {
            t0[k] = d0[k] - d2[k];
            t1[k] = d1[k] + d2[k];
            t2[k] = d2[k] - d1[k];
            t3[k] = d1[k] - d3[k];
        }
    }
    // ·B along each row i: a = (E[tx], O[tx], E[tx + 1], O[tx + 1]) into positions 4i .. 4i + 3.
    let (te, to) = sums.split_at(4 * len);
    for (i, quad) in out.chunks_exact_mut(4).enumerate() {
        let [p0, p1, p2, p3] = quad else {
            unreachable!("chunks of four")
        };
        for ty in 0..th {
            let (e, o) = (&te[i * len + ty * n..][..n], &to[i * len + ty * n..][..n]);
            let (e0, e1, o0, o1) = (&e[..tw], &e[1..], &o[..tw], &o[1..]);
            let r = ty * tw..(ty + 1) * tw;
            let (p0, p1) = (&mut p0[r.clone()], &mut p1[r.clone()]);
            let (p2, p3) = (&mut p2[r.clone()], &mut p3[r]);
            for tx in 0..tw {
                p0[tx] = e0[tx] - e1[tx];
                p1[tx] = o0[tx] + e1[tx];
                p2[tx] = e1[tx] - o0[tx];
                p3[tx] = o0[tx] - o1[tx];
            }
        }
    }
}

/// `Aᵀ·M·A` of every tile of `m` (`[16][Cout × tiles]`), added onto the output `y` (`[Cout × h·w]`).
/// `sums` is scratch of `8·tiles`.
fn output_tiles<T: Real>(m: &[T], co: usize, h: usize, w: usize, y: &mut [T], sums: &mut [T]) {
    let (th, tw) = tiles(h, w);
    let nt = th * tw;
    let planes: Vec<&[T]> = m.chunks_exact(co * nt).collect();
    for (o, plane) in y.chunks_exact_mut(h * w).take(co).enumerate() {
        let mo: Vec<&[T]> = planes.iter().map(|p| &p[o * nt..][..nt]).collect();
        output_channel(&mo, h, w, sums, plane);
    }
}

/// `Aᵀ·M·A` of one output channel's tiles (`m[ξ]`, `tiles` values each) added onto its plane: first
/// `Aᵀ·M` over all tiles at once (`s_j = M0j + M1j + M2j`, `d_j = M1j − M2j − M3j`), then `·A` along
/// each tile row into output rows `2ty` (from `s`) and `2ty + 1` (from `d`): columns `2tx` and `2tx + 1`
/// get `z0 + z1 + z2` and `z1 − z2 − z3` (dropped past an odd image's edge). Picked at run time like
/// [`input_channel`].
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx512dq", "x86_64+avx2+fma"))]
fn output_channel<T: Real>(m: &[&[T]], h: usize, w: usize, sums: &mut [T], plane: &mut [T]) {
    let (th, tw) = tiles(h, w);
    let nt = th * tw;
    let (s, d) = sums[..8 * nt].split_at_mut(4 * nt);
    for (j, (sj, dj)) in s
        .chunks_exact_mut(nt)
        .zip(d.chunks_exact_mut(nt))
        .enumerate()
    {
        let (m0, m1, m2, m3) = (
            &m[j][..nt],
            &m[4 + j][..nt],
            &m[8 + j][..nt],
            &m[12 + j][..nt],
        );
        for k in 0..nt {
            sj[k] = m0[k] + m1[k] + m2[k];
            dj[k] = m1[k] - m2[k] - m3[k];
        }
    }
    let pairs = w / 2;
    for ty in 0..th {
        for (r, z) in [&*s, &*d].into_iter().enumerate() {
            let oy = 2 * ty + r;
            if oy >= h {
                break;
            }
            let zj = |j: usize| &z[j * nt + ty * tw..][..tw];
            let (z0, z1, z2, z3) = (zj(0), zj(1), zj(2), zj(3));
            let out = &mut plane[oy * w..][..w];
            for (tx, pair) in out.chunks_exact_mut(2).enumerate().take(pairs) {
                pair[0] += z0[tx] + z1[tx] + z2[tx];
                pair[1] += z1[tx] - z2[tx] - z3[tx];
            }
            if w % 2 == 1 {
                out[w - 1] += z0[pairs] + z1[pairs] + z2[pairs];
            }
        }
    }
}

/// `Gᵀ·dU·G` of `n` transformed tiles (`[16][n]`, f64): the gradients of the kernels (`[9][n]`, tap-major)
/// whose transforms ([`kernel_tiles`]) had the gradients `dU`. Elementwise over the kernels.
pub(super) fn kernel_gradients(du: &[f64], n: usize) -> Vec<f64> {
    let pos = |xi: usize| &du[xi * n..][..n];
    // Gᵀ·dU, 3×4: rows dU0 + (dU1 + dU2)/2, (dU1 − dU2)/2, (dU1 + dU2)/2 + dU3 of each column j.
    let mut r = vec![0.0; 12 * n];
    for (k, out) in r.chunks_exact_mut(4 * n).enumerate() {
        for (j, o) in out.chunks_exact_mut(n).enumerate() {
            gt_combine(k, pos(j), pos(4 + j), pos(8 + j), pos(12 + j), o);
        }
    }
    // (Gᵀ·dU)·G: the same combination along each row's four columns.
    let mut g = vec![0.0; 9 * n];
    for (t, out) in g.chunks_exact_mut(n).enumerate() {
        let (ky, kx) = (t / 3, t % 3);
        let col = |j: usize| &r[(4 * ky + j) * n..][..n];
        gt_combine(kx, col(0), col(1), col(2), col(3), out);
    }
    g
}

/// Row `k` of `Gᵀ` applied to four values, elementwise: `a + (b + c)/2`, `(b − c)/2` or `(b + c)/2 + d`.
fn gt_combine(k: usize, a: &[f64], b: &[f64], c: &[f64], d: &[f64], out: &mut [f64]) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = match k {
            0 => a[i] + 0.5 * (b[i] + c[i]),
            1 => 0.5 * (b[i] - c[i]),
            _ => 0.5 * (b[i] + c[i]) + d[i],
        };
    }
}

/// `A·dY·Aᵀ` of every 2×2 tile of one output channel's gradient `dy` (`h × w`, zero past an odd edge)
/// into `out[ξ]` (`tiles` values each), with `A = (Aᵀ)ᵀ`, 4×2: a pair `(z0, z1)` becomes
/// `(z0, z0 + z1, z0 − z1, −z1)`, first down each tile's two rows, then along its two columns.
/// `scratch` holds `4·w` values.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx512dq", "x86_64+avx2+fma"))]
fn output_grad_channel<T: Real>(
    dy: &[T],
    h: usize,
    w: usize,
    scratch: &mut [T],
    out: &mut [&mut [T]],
) {
    let (th, tw) = tiles(h, w);
    let pairs = w / 2;
    let rows = &mut scratch[..4 * w];
    for ty in 0..th {
        let r0 = &dy[2 * ty * w..][..w];
        let r1 = (2 * ty + 1 < h).then(|| &dy[(2 * ty + 1) * w..][..w]);
        let [a0, a1, a2, a3] = split4(rows);
        match r1 {
            Some(r1) => {
                for x in 0..w {
                    a0[x] = r0[x];
                    a1[x] = r0[x] + r1[x];
                    a2[x] = r0[x] - r1[x];
                    a3[x] = T::zero() - r1[x];
                }
            }
            None => {
                a0.copy_from_slice(r0);
                a1.copy_from_slice(r0);
                a2.copy_from_slice(r0);
                a3.fill(T::zero());
            }
        }
        let q = ty * tw..(ty + 1) * tw;
        for (i, quad) in out.chunks_exact_mut(4).enumerate() {
            let [p0, p1, p2, p3] = quad else {
                unreachable!("chunks of four")
            };
            let a = &rows[i * w..][..w];
            let (p0, p1) = (&mut p0[q.clone()], &mut p1[q.clone()]);
            let (p2, p3) = (&mut p2[q.clone()], &mut p3[q.clone()]);
            for (tx, pair) in a.chunks_exact(2).enumerate().take(pairs) {
                let (e, o) = (pair[0], pair[1]);
                p0[tx] = e;
                p1[tx] = e + o;
                p2[tx] = e - o;
                p3[tx] = T::zero() - o;
            }
            if w % 2 == 1 {
                let e = a[w - 1];
                (p0[pairs], p1[pairs], p2[pairs], p3[pairs]) = (e, e, e, T::zero());
            }
        }
    }
}

/// The input tiles of one batch element ([`input_tiles`], `[16][Cin × tiles]`), and the scratch buffer
/// they were made with, at least `more` values long for the caller's next transform.
fn transformed_input<T: Real>(
    x: &[T],
    ci: usize,
    h: usize,
    w: usize,
    more: usize,
) -> (Scratch<T>, Scratch<T>) {
    let (th, tw) = tiles(h, w);
    let mut v = Scratch::<T>::new(POSITIONS * ci * th * tw);
    let mut scratch = Scratch::<T>::new(input_scratch(h, w).max(more));
    input_tiles(x, ci, h, w, &mut v, &mut scratch);
    (v, scratch)
}

/// One batch element's weight gradient, transformed: `du[ξ]` (`Cout × Cin`) += `W_ξ·V_ξᵀ`, with `V` the
/// input tiles of the forward ([`input_tiles`]) and `W_ξ` (`Cout × tiles`) the output gradient's tiles
/// ([`output_grad_channel`]). [`kernel_gradients`] turns the batch's sum into the kernels' gradients.
pub(super) fn grad_weight_element<T: Real>(
    x: &[T],
    dy: &[T],
    (ci, co, h, w): (usize, usize, usize, usize),
    du: &mut [T],
) -> candle_core::Result<()> {
    let (th, tw) = tiles(h, w);
    let nt = th * tw;
    let (v, mut scratch) = transformed_input(x, ci, h, w, 4 * w);
    let mut wt = Scratch::<T>::new(POSITIONS * co * nt);
    for_each_channel(&mut wt, co, nt, |o, out| {
        output_grad_channel(&dy[o * h * w..][..h * w], h, w, &mut scratch, out)
    });
    for ((w_xi, v_xi), du_xi) in wt
        .chunks_exact(co * nt)
        .zip(v.chunks_exact(ci * nt))
        .zip(du.chunks_exact_mut(co * ci))
    {
        <T as Gemm>::gemm_serial(false, true, co, ci, nt, w_xi, v_xi, T::one(), du_xi)?;
    }
    Ok(())
}

/// One batch element: `y` (`[Cout × h·w]`, holding the bias or zero) += the 3×3 "same" convolution of
/// `x` (`[Cin × h·w]`) with the transformed weights `u` (`[16][Cout × Cin]`, see [`kernel_tiles`]).
pub(super) fn forward_element<T: Real>(
    x: &[T],
    u: &[T],
    (ci, co, h, w): (usize, usize, usize, usize),
    y: &mut [T],
) -> candle_core::Result<()> {
    let (th, tw) = tiles(h, w);
    let nt = th * tw;
    let (v, mut scratch) = transformed_input(x, ci, h, w, 8 * nt);
    let mut m = Scratch::<T>::new(POSITIONS * co * nt);
    for ((u_xi, v_xi), m_xi) in u
        .chunks_exact(co * ci)
        .zip(v.chunks_exact(ci * nt))
        .zip(m.chunks_exact_mut(co * nt))
    {
        <T as Gemm>::gemm_serial(false, false, co, nt, ci, u_xi, v_xi, T::zero(), m_xi)?;
    }
    output_tiles(&m, co, h, w, y, &mut scratch);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The correlation of one channel, straight from its definition (zero padding 1).
    fn direct(x: &[f64], h: usize, w: usize, g: &[f64; 9]) -> Vec<f64> {
        let mut y = vec![0.0; h * w];
        for oy in 0..h {
            for ox in 0..w {
                for ky in 0..3 {
                    for kx in 0..3 {
                        let (iy, ix) = ((oy + ky) as isize - 1, (ox + kx) as isize - 1);
                        if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                            y[oy * w + ox] += g[ky * 3 + kx] * x[iy as usize * w + ix as usize];
                        }
                    }
                }
            }
        }
        y
    }

    /// One input and one output channel, every image size from 1×1 to 7×6 (odd sizes: the half tiles),
    /// integer-valued data so that every step is exact in f64: the transforms reproduce the definition
    /// exactly, and a bias already in `y` is kept.
    #[test]
    fn one_channel_equals_the_definition_exactly() {
        let g = [1.0, -2.0, 3.0, 0.0, 5.0, -1.0, 2.0, 4.0, -3.0];
        let u = kernel_tiles(&g, 1);
        for h in 1..8 {
            for w in 1..7 {
                let x: Vec<f64> = (0..h * w).map(|i| ((i * 7) % 11) as f64 - 5.0).collect();
                let mut y = vec![10.0; h * w];
                forward_element(&x, &u, (1, 1, h, w), &mut y).unwrap();
                let want: Vec<f64> = direct(&x, h, w, &g).iter().map(|v| v + 10.0).collect();
                assert_eq!(y, want, "{h}×{w}");
            }
        }
    }
}
