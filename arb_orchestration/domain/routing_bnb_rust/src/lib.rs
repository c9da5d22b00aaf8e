//! Prototype exact branch-and-bound for the route planner's per-asset fixed-charge
//! generalized min-cost flow MILP.  Stdlib only.
//!
//! Model (per asset), venues v, rails r = u -> w:
//!   min sum f_r y_r + p_r x_r
//!   lo_v <= sum_{r into v} ((1-p_r) x_r - f_r y_r) - sum_{r out of v} x_r <= hi_v
//!   me_r y_r <= x_r <= M_r y_r,  y in {0,1}
//! lo_v = t_v - b_v.  hi_v = max(lo_v + mu_v, 0): the least-moving optimum never leaves a
//! venue above max(b_v, t_v + mu_v) (mu_v = largest credit of a rail into v at its minimum).
//!
//! Node relaxation (rows: one per venue, plus one cover row per deficit venue):
//! an unfixed rail with node bound m has an amount column x in [0, m] (cost p + f/m per unit,
//! credit 1 - p - f/m per unit, 1/m in its destination's cover row) and, if its destination has
//! a deficit, a "fee" column l in [0, 1] (cost f, credit -f, 1 in the cover row): y = x/m + l.
//! Every integral point maps to a point of this LP with the same cost (l = 1 - x/m), so the LP
//! is a relaxation; the cover row (sum of y into a deficit venue >= the number of rails its
//! deficit needs) is what the plain x/m relaxation lacks.  A rail fixed on pays f, shifts its
//! destination row by f and takes x in [me, m]; fixed off: x = 0.
//! Dense bounded dual simplex with an explicit basis inverse (rows <= 2 * venues), warm-started
//! from the parent's basis.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

/// Option bits of the root's cutting loop (with 1024, the source/destination venue-bound cuts at the root):
/// after each round drop the cut rows the LP leaves slack (a small pool: the node LP stays small; dropping rows
/// only relaxes it) ...
const PURGE_CUTS: u32 = 524288;
/// ... run the root's heuristics (flow heuristic, core sub-search) on the LP without cut rows first, then the loop
/// (their plans come from that LP's support; with the cut LP's support the optimum of some assets was found late) ...
const DEFER_CUTS: u32 = 1048576;
/// ... and the core sub-search once more on the cut LP's support (heuristic only: anything it finds is a plan).
const CORE_AFTER_CUTS: u32 = 2097152;
/// Option bit: with two search threads (PARALLEL), the root does not run the core sub-searches after its cuts
/// (CORE_AFTER_CUTS) itself: it records what they rank by (`CoreSnap`), and the first search thread runs them while
/// the other starts on the tree (they took 40-100 ms of a 0.1-0.2 s root at 20-30 venues, the second core idle).
const CORE_OVERLAP: u32 = 262144;
/// Option bit: when the branching rail was chosen by its pseudo-costs and they predict that a child cannot beat the
/// incumbent, probe that child (at most VERIFY_DEAD_ITERS dual simplex iterations, stopping once its bound reaches the
/// prune level); a child so proven is not created. Sixteenth session: 35-45 % fewer nodes on the 20-30-venue bench
/// assets, `plan_routes` up to 16 % faster there (20:2 0.83 -> 0.76 s, 30:2 2.10 -> 1.76 s; 20:4 and 30:0 the
/// same), 10 venues unchanged.
const VERIFY_DEAD: u32 = 4194304;
const VERIFY_DEAD_ITERS: u64 = 50;
/// Reduced-cost fixing that counts a rail's fee column as well as its amount column (`fix_by_reduced_cost`) ...
const RC_FEE: u32 = 16777216;
/// ... and caps a rail's amount by the same bound.
const RC_CAPS: u32 = 33554432;
/// Rails the root's core sub-search adds to the LP's support (30 until the twelfth session: with reduced-cost fixing an
/// early optimum prunes more, and 60 gave 16 % fewer nodes over the 20-30-venue bench assets, the slowest 1.5x).
const ROOT_CORE_EXTRA: usize = 60;
/// A second root core sub-search whose extra rails are ranked by what sending a typical amount on them costs (the
/// reduced-cost bound of `fix_by_reduced_cost` at the mean deficit), `ROOT_CORE_BY_AMOUNT_EXTRA` of them. The first
/// ranking (the cost of switching a rail on at its minimum, about its fixed fee) left the optimum's relay rails at
/// ranks 90-2,100 on the 20-30-venue bench assets; this one puts them in the first 66 (thirteenth session), so the
/// root often holds the optimum before the search starts (which then prunes from the first node).
const CORE_BY_AMOUNT: u32 = 1073741824;
const ROOT_CORE_BY_AMOUNT_EXTRA: usize = 30;

const FREE: u8 = 0;
const ON: u8 = 1;
const OFF: u8 = 2;

struct Inst {
    n: usize,
    k: usize,
    from: Vec<usize>,
    to: Vec<usize>,
    f: Vec<f64>,
    p: Vec<f64>,
    me: Vec<f64>,
    mm: Vec<f64>,
    lo: Vec<f64>,
    hi: Vec<f64>,
    ins: Vec<Vec<usize>>,
    outs: Vec<Vec<usize>>,
    cover: Vec<i32>,     // per venue: index of its cover row (n + i) or -1
    cover_rhs: Vec<f64>, // per cover row: rails needed
    nrows: usize,
}


/// Sparse columns in one flat buffer, `stride` slots per column (grown by doubling when a column outgrows it: only
/// cut rows add more than 3 entries). Reads index like `Vec<Vec<_>>` (`cols[j]` is the column's entries), so the
/// arithmetic visits entries in the same order as before; no allocation per column, no pointer chasing.
#[derive(Clone)]
struct Cols {
    stride: usize,
    len: Vec<u32>,
    data: Vec<(u32, f64)>,
}

impl Cols {
    fn new(t: usize, stride: usize) -> Cols {
        Cols { stride, len: vec![0; t], data: vec![(0, 0.0); t * stride] }
    }
    fn resize(&mut self, t: usize) {
        self.len.resize(t, 0);
        self.data.resize(t * self.stride, (0, 0.0));
    }
    #[inline]
    fn clear(&mut self, j: usize) {
        self.len[j] = 0;
    }
    #[inline]
    fn push(&mut self, j: usize, e: (u32, f64)) {
        let l = self.len[j] as usize;
        if l == self.stride {
            self.grow();
        }
        self.data[j * self.stride + l] = e;
        self.len[j] = l as u32 + 1;
    }
    fn set(&mut self, j: usize, es: &[(u32, f64)]) {
        while es.len() > self.stride {
            self.grow();
        }
        let s = self.stride;
        self.data[j * s..j * s + es.len()].copy_from_slice(es);
        self.len[j] = es.len() as u32;
    }
    fn grow(&mut self) {
        let (old, ns) = (self.stride, self.stride * 2);
        let t = self.len.len();
        let mut data = vec![(0u32, 0.0f64); t * ns];
        for j in 0..t {
            let l = self.len[j] as usize;
            data[j * ns..j * ns + l].copy_from_slice(&self.data[j * old..j * old + l]);
        }
        self.data = data;
        self.stride = ns;
    }
}

impl std::ops::Index<usize> for Cols {
    type Output = [(u32, f64)];
    #[inline]
    fn index(&self, j: usize) -> &[(u32, f64)] {
        let s = j * self.stride;
        &self.data[s..s + self.len[j] as usize]
    }
}

// ------------------------------------------------------------------ the LP

#[derive(Clone)]
struct Lp {
    nr: usize,
    nc: usize, // structural columns; slacks are nc..nc+nr (column -e_i, value = row activity)
    c: Vec<f64>,
    ent: Cols,
    lb: Vec<f64>,
    ub: Vec<f64>,
    basis: Vec<usize>,
    pos: Vec<i32>,
    at_upper: Vec<bool>,
    binv: Vec<f64>,
    xb: Vec<f64>,
    pi: Vec<f64>,
    d: Vec<f64>,
    rhs: Vec<f64>,
    alpha: Vec<f64>,
    w: Vec<f64>,
    iters: u64,
    fact_basis: Vec<usize>,
    fact_cols: Cols,
    fact_valid: bool,
    since: usize,
    pub refactors: u64,
    hit_limit: bool,
    cutoff: f64, // stop (LpStatus::Cutoff) once a dual feasible basis's objective reaches this (scaled costs); probes
    check_inverse: bool, // CHECK_INVERSE
    rowwise: bool,         // price through the row-wise index (set by load_lp: no cut rows, fixed column patterns)
    rows_built: bool,      // the row-wise index matches the columns' patterns
    row_start: Vec<u32>,   // row-wise index: row i's entries are row_ent[row_start[i]..row_start[i + 1]]
    row_ent: Vec<(u32, u32)>, // (column, index of the entry in ent.data), columns ascending within a row
    mark: Vec<u32>,
    stamp: u32,
    rows_stride: usize,
    ntouched: usize,
    fc_ok: bool, // factor's cache: the basis, its columns and the inverse last computed from scratch
    fc_basis: Vec<usize>,
    fc_cols: Cols,
    fc_binv: Vec<f64>,
    touched: Vec<u32>,     // columns whose alpha may be nonzero (row-wise pricing keeps alpha zero elsewhere)
    d_fresh: bool, // d holds the reduced costs of the current basis, c and columns (compute_dual would give the same)
    buf_mov: Vec<u32>,
    buf_cand: Vec<u32>,
    buf_nz: Vec<u32>,
}

enum LpStatus {
    /// The objective of a dual feasible basis reached `Lp::cutoff`: the LP's optimum is at least that (the dual
    /// simplex keeps every basis dual feasible, and such a basis's objective is a dual bound). Only probes set it.
    Cutoff,
    Optimal,
    Infeasible,
    Failed,
}

impl Lp {
    fn new(nr: usize, nc: usize) -> Lp {
        let t = nr + nc;
        let mut lp = Lp {
            nr,
            nc,
            c: vec![0.0; t],
            ent: Cols::new(t, 3),
            lb: vec![0.0; t],
            ub: vec![0.0; t],
            basis: (nc..t).collect(),
            pos: vec![-1; t],
            at_upper: vec![false; t],
            binv: vec![0.0; nr * nr],
            xb: vec![0.0; nr],
            pi: vec![0.0; nr],
            d: vec![0.0; t],
            rhs: vec![0.0; nr],
            alpha: vec![0.0; t],
            w: vec![0.0; nr],
            iters: 0,
            fact_basis: Vec::new(),
            fact_cols: Cols::new(0, 3),
            fact_valid: false,
            since: 0,
            refactors: 0,
            hit_limit: false,
            cutoff: f64::INFINITY,
            check_inverse: false,
            rowwise: false,
            rows_built: false,
            row_start: Vec::new(),
            row_ent: Vec::new(),
            mark: Vec::new(),
            stamp: 0,
            rows_stride: 0,
            touched: Vec::new(),
            ntouched: 0,
            fc_ok: false,
            fc_basis: Vec::new(),
            fc_cols: Cols::new(0, 3),
            fc_binv: Vec::new(),
            d_fresh: false,
            buf_mov: Vec::new(),
            buf_cand: Vec::new(),
            buf_nz: Vec::new(),
        };
        for i in 0..nr {
            lp.pos[nc + i] = i as i32;
            lp.ent.set(nc + i, &[(i as u32, -1.0)]);
        }
        lp
    }

    /// Grow to nr rows (new rows' slacks basic); keeps the current basis otherwise.
    fn resize_rows(&mut self, nr: usize) {
        if nr == self.nr {
            return;
        }
        let t = self.nc + nr;
        let old = self.nr;
        if nr < old {
            // rows dropped (the root's cut pool purged): the caller sets a basis of the smaller LP next; set_basis
            // resets pos only for the current basis' columns, so forget the dropped rows' slacks here
            self.basis.retain(|&j| j < t);
        }
        self.c.resize(t, 0.0);
        self.ent.resize(t);
        self.lb.resize(t, 0.0);
        self.ub.resize(t, 0.0);
        self.pos.resize(t, -1);
        self.at_upper.resize(t, false);
        self.d.resize(t, 0.0);
        self.alpha.resize(t, 0.0);
        for i in old..nr {
            self.ent.set(self.nc + i, &[(i as u32, -1.0)]);
            self.basis.push(self.nc + i);
            self.pos[self.nc + i] = i as i32;
        }
        self.nr = nr;
        self.rows_built = false;
        self.d_fresh = false;
        self.fact_valid = false;
        self.binv = vec![0.0; nr * nr];
        self.xb = vec![0.0; nr];
        self.pi = vec![0.0; nr];
        self.rhs = vec![0.0; nr];
        self.w = vec![0.0; nr];
    }

    fn slack_basis(&mut self) {
        let b: Vec<usize> = (self.nc..self.nc + self.nr).collect();
        self.set_basis(&b);
    }

    fn set_basis(&mut self, b: &[usize]) {
        self.d_fresh = false;
        // pos[j] >= 0 exactly for the basis' columns (kept by every basis change), so resetting those suffices
        for &j in &self.basis {
            self.pos[j] = -1;
        }
        self.basis.clear();
        for (i, &j) in b.iter().enumerate() {
            self.basis.push(j);
            self.pos[j] = i as i32;
        }
        // rows added since this basis was stored: their slacks are basic
        for i in b.len()..self.nr {
            let j = self.nc + i;
            self.pos[j] = self.basis.len() as i32;
            self.basis.push(j);
        }
    }

    /// Replace basis columns that make the basis singular by slacks of rows left without a pivot.
    fn repair(&mut self) {
        let n = self.nr;
        let mut a = vec![0.0; n * n];
        for (c, &j) in self.basis.iter().enumerate() {
            for &(r, v) in &self.ent[j] {
                a[r as usize * n + c] += v;
            }
        }
        let mut used = vec![false; n];
        let mut dependent = Vec::new();
        for c in 0..n {
            let mut best = usize::MAX;
            let mut bv = 1e-9;
            for r in 0..n {
                if !used[r] && a[r * n + c].abs() > bv {
                    bv = a[r * n + c].abs();
                    best = r;
                }
            }
            if best == usize::MAX {
                dependent.push(c);
                continue;
            }
            used[best] = true;
            let piv = a[best * n + c];
            for r in 0..n {
                if r != best {
                    let fct = a[r * n + c] / piv;
                    if fct != 0.0 {
                        for t in c..n {
                            a[r * n + t] -= fct * a[best * n + t];
                        }
                    }
                }
            }
        }
        let free_rows: Vec<usize> = (0..n).filter(|&r| !used[r]).collect();
        for (c, r) in dependent.into_iter().zip(free_rows) {
            let old = self.basis[c];
            self.pos[old] = -1;
            self.at_upper[old] = false;
            let slack = self.nc + r;
            if self.pos[slack] >= 0 {
                self.pos[old] = c as i32; // (keeps pos consistent with the basis)
                continue; // cannot happen: a basic slack's row is always pivoted
            }
            self.basis[c] = slack;
            self.pos[slack] = c as i32;
        }
    }

    /// Make binv the inverse of the current basis: reuse it (Sherman-Morrison for a few changed
    /// columns) when the basis is the one last factored/updated, else refactor (repairing if singular).
    fn prepare(&mut self) -> bool {
        let n = self.nr;
        if self.fact_valid && self.fact_basis == self.basis && self.since < 40 {
            let mut changed = Vec::new();
            for i in 0..n {
                let j = self.basis[i];
                if self.ent[j] != self.fact_cols[i] {
                    changed.push(i);
                }
            }
            if changed.len() <= 4 {
                let mut ok = true;
                for &i in &changed {
                    let j = self.basis[i];
                    // u = a_new - a_old ; B' = B + u e_i^T
                    let mut u = vec![0.0; n];
                    for &(r, v) in &self.ent[j] {
                        u[r as usize] += v;
                    }
                    for &(r, v) in &self.fact_cols[i] {
                        u[r as usize] -= v;
                    }
                    let mut bu = vec![0.0; n];
                    for r in 0..n {
                        let row = &self.binv[r * n..(r + 1) * n];
                        let mut acc = 0.0;
                        for t in 0..n {
                            acc += row[t] * u[t];
                        }
                        bu[r] = acc;
                    }
                    let den = 1.0 + bu[i];
                    if den.abs() < 1e-8 {
                        ok = false;
                        break;
                    }
                    let rowi: Vec<f64> = self.binv[i * n..(i + 1) * n].to_vec();
                    for r in 0..n {
                        let fct = bu[r] / den;
                        if fct != 0.0 {
                            for t in 0..n {
                                self.binv[r * n + t] -= fct * rowi[t];
                            }
                        }
                    }
                    self.fact_cols.set(i, &self.ent[j]);
                    self.since += 1;
                }
                if ok {
                    if self.check_inverse {
                        self.count_inverse_check();
                    }
                    return true;
                }
            }
        }
        if !self.factor() {
            self.repair();
            if !self.factor() {
                self.slack_basis();
                if !self.factor() {
                    return false;
                }
            }
        }
        true
    }

    /// CHECK_INVERSE: is binv the inverse of the current basis? Each entry of binv·B - I is measured against the
    /// magnitude of the products it sums (at least 1): a basis with large entries leaves an inverse computed from
    /// scratch with absolute residuals of 2^-14 to 2^-11 (rounding), a stale inverse residuals of order 1. Counted
    /// process-wide; a failure is a worst relative residual above 1e-8.
    fn count_inverse_check(&self) {
        let n = self.nr;
        let mut worst = 0.0f64;
        for c in 0..n {
            let j = self.basis[c];
            for r in 0..n {
                let (mut s, mut size) = (0.0, 1.0);
                for &(row, v) in &self.ent[j] {
                    let t = self.binv[r * n + row as usize] * v;
                    s += t;
                    size += t.abs();
                }
                worst = worst.max((s - if r == c { 1.0 } else { 0.0 }).abs() / size);
            }
        }
        INVERSE_CHECKS.fetch_add(1, AtomicOrdering::Relaxed);
        // (non-negative doubles order like their bit patterns; NaN's bits are above every finite one)
        INVERSE_CHECK_WORST.fetch_max(if worst.is_nan() { u64::MAX } else { worst.to_bits() }, AtomicOrdering::Relaxed);
        if !(worst <= 1e-8) {
            INVERSE_CHECK_FAILURES.fetch_add(1, AtomicOrdering::Relaxed);
        }
    }

    fn snapshot_after_pivots(&mut self) {
        self.snapshot();
    }

    fn snapshot(&mut self) {
        self.fact_basis = self.basis.clone();
        let n = self.basis.len();
        if self.fact_cols.len.len() != n || self.fact_cols.stride < self.ent.stride {
            self.fact_cols = Cols::new(n, self.ent.stride);
        }
        for i in 0..n {
            self.fact_cols.set(i, &self.ent[self.basis[i]]);
        }
        self.fact_valid = true;
    }

    fn factor(&mut self) -> bool {
        self.refactors += 1;
        self.since = 0;
        let n = self.nr;
        // the inverse is a function of the basis' columns: reuse the last one computed from scratch when the basis
        // and its columns are the same (probes restore the node's basis again and again); identical bits
        if self.fc_ok && self.fc_basis == self.basis && self.fc_binv.len() == n * n
            && (0..n).all(|i| self.ent[self.basis[i]] == self.fc_cols[i])
        {
            self.binv.clear();
            self.binv.extend_from_slice(&self.fc_binv);
            return true;
        }
        let mut a = vec![0.0; n * n];
        for (c, &j) in self.basis.iter().enumerate() {
            for &(r, v) in &self.ent[j] {
                a[r as usize * n + c] += v;
            }
        }
        let mut inv = vec![0.0; n * n];
        for i in 0..n {
            inv[i * n + i] = 1.0;
        }
        for c in 0..n {
            let mut best = c;
            let mut bv = a[c * n + c].abs();
            for r in c + 1..n {
                if a[r * n + c].abs() > bv {
                    bv = a[r * n + c].abs();
                    best = r;
                }
            }
            if bv < 1e-11 {
                return false;
            }
            if best != c {
                for t in 0..n {
                    a.swap(c * n + t, best * n + t);
                    inv.swap(c * n + t, best * n + t);
                }
            }
            let piv = a[c * n + c];
            for t in 0..n {
                a[c * n + t] /= piv;
                inv[c * n + t] /= piv;
            }
            for r in 0..n {
                if r != c {
                    let fct = a[r * n + c];
                    if fct != 0.0 {
                        for t in 0..n {
                            a[r * n + t] -= fct * a[c * n + t];
                            inv[r * n + t] -= fct * inv[c * n + t];
                        }
                    }
                }
            }
        }
        self.binv = inv;
        self.fc_basis.clear();
        self.fc_basis.extend_from_slice(&self.basis);
        if self.fc_cols.len.len() != n || self.fc_cols.stride < self.ent.stride {
            self.fc_cols = Cols::new(n, self.ent.stride);
        }
        for i in 0..n {
            self.fc_cols.set(i, &self.ent[self.basis[i]]);
        }
        self.fc_binv.clear();
        self.fc_binv.extend_from_slice(&self.binv);
        self.fc_ok = true;
        true
    }

    #[inline]
    fn nb_value(&self, j: usize) -> f64 {
        if self.at_upper[j] { self.ub[j] } else { self.lb[j] }
    }

    /// The simplex multipliers: pi = c_B^T B^-1.
    fn compute_pi(&mut self) {
        let n = self.nr;
        for t in 0..n {
            self.pi[t] = 0.0;
        }
        for i in 0..n {
            let cb = self.c[self.basis[i]];
            if cb != 0.0 {
                let row = &self.binv[i * n..(i + 1) * n];
                for t in 0..n {
                    self.pi[t] += cb * row[t];
                }
            }
        }
    }

    fn compute_dual(&mut self) {
        self.compute_pi();
        for j in 0..self.nc + self.nr {
            // basic and fixed columns: no reduced cost is read (the ratio test, fix_dual, reduced-cost fixing and the
            // core heuristic look at movable nonbasic columns only)
            if self.pos[j] >= 0 || self.lb[j] == self.ub[j] {
                self.d[j] = 0.0;
                continue;
            }
            let mut s = self.c[j];
            for &(r, v) in &self.ent[j] {
                s -= self.pi[r as usize] * v;
            }
            self.d[j] = s;
        }
        self.d_fresh = true;
    }

    /// compute_dual, fix_dual and compute_primal in one pass over the columns (same arithmetic, same order: a
    /// column's bound flip depends on its own reduced cost only, and the primal right-hand side is accumulated in
    /// column order as before).
    fn refresh(&mut self) {
        let n = self.nr;
        for t in 0..n {
            self.rhs[t] = 0.0;
        }
        self.compute_pi();
        for j in 0..self.nc + self.nr {
            if self.pos[j] >= 0 {
                self.d[j] = 0.0;
                continue;
            }
            let x = if self.lb[j] == self.ub[j] {
                self.d[j] = 0.0;
                self.lb[j]
            } else {
                let mut s = self.c[j];
                for &(r, v) in &self.ent[j] {
                    s -= self.pi[r as usize] * v;
                }
                self.d[j] = s;
                // fix_dual: a wrong-signed reduced cost moves the column to its other bound
                let up = (s < -1e-9) | (self.at_upper[j] & !(s > 1e-9));
                self.at_upper[j] = up;
                if up { self.ub[j] } else { self.lb[j] }
            };
            if x == 0.0 {
                continue;
            }
            for &(r, v) in &self.ent[j] {
                self.rhs[r as usize] -= v * x;
            }
        }
        for i in 0..n {
            let row = &self.binv[i * n..(i + 1) * n];
            let mut s = 0.0;
            for t in 0..n {
                s += row[t] * self.rhs[t];
            }
            self.xb[i] = s;
        }
        self.d_fresh = true;
    }

    fn objective(&self) -> f64 {
        let mut z = 0.0;
        for j in 0..self.nc {
            if self.c[j] != 0.0 {
                z += self.c[j] * self.value(j);
            }
        }
        z
    }

    #[inline]
    fn value(&self, j: usize) -> f64 {
        if self.pos[j] >= 0 { self.xb[self.pos[j] as usize] } else { self.nb_value(j) }
    }

    /// The row-wise index of the columns' current patterns (CSR; columns ascending within each row).
    fn build_rows(&mut self) {
        let nt = self.nc + self.nr;
        let st = self.ent.stride;
        self.row_start.clear();
        self.row_start.resize(self.nr + 1, 0);
        for j in 0..nt {
            for &(r, _) in &self.ent[j] {
                self.row_start[r as usize + 1] += 1;
            }
        }
        for i in 0..self.nr {
            self.row_start[i + 1] += self.row_start[i];
        }
        let mut fill: Vec<u32> = self.row_start[..self.nr].to_vec();
        self.row_ent.clear();
        self.row_ent.resize(self.row_start[self.nr] as usize, (0, 0));
        for j in 0..nt {
            let l = self.ent.len[j] as usize;
            for s in 0..l {
                let r = self.ent.data[j * st + s].0 as usize;
                self.row_ent[fill[r] as usize] = (j as u32, (j * st + s) as u32);
                fill[r] += 1;
            }
        }
        self.mark.clear();
        self.mark.resize(nt, 0);
        self.stamp = 0;
        self.touched.clear();
        self.ntouched = 0;
        for a in self.alpha.iter_mut() {
            *a = 0.0;
        }
        self.rows_stride = st;
        self.rows_built = true;
    }

    fn solve(&mut self, max_iter: u64) -> LpStatus {
        // reused buffers (no allocation per call): movable columns, ratio-test candidates, nonzero pivot-row entries
        let mut mov = std::mem::take(&mut self.buf_mov);
        let mut cand = std::mem::take(&mut self.buf_cand);
        let mut nz = std::mem::take(&mut self.buf_nz);
        let st = self.solve_with(max_iter, &mut mov, &mut cand, &mut nz);
        if !matches!(st, LpStatus::Optimal | LpStatus::Infeasible) {
            // Stopped mid-way (an iteration limit: a strong-branching probe; or a failure): binv is the inverse of the
            // basis the pivots reached, not of the last snapshot (`fact_basis`, `fact_cols`), and the caller puts an
            // earlier basis back. Without this, `prepare` took binv for the snapshot's inverse when that basis came
            // back and updated it by Sherman-Morrison: the next LP ran on a wrong inverse (seen after probes stopped
            // at their 25 iterations, errors up to 2e4 in binv·B - I; `CHECK_INVERSE`). Refactor instead.
            self.fact_valid = false;
        }
        self.buf_mov = mov;
        self.buf_cand = cand;
        self.buf_nz = nz;
        st
    }

    fn solve_with(&mut self, max_iter: u64, mov: &mut Vec<u32>, cand: &mut Vec<u32>, nz: &mut Vec<u32>) -> LpStatus {
        let n = self.nr;
        let nt = self.nc + self.nr;
        self.hit_limit = false;
        self.d_fresh = false;
        if !self.prepare() {
            return LpStatus::Failed;
        }
        mov.clear();
        let rowwise = self.rowwise;
        if rowwise {
            if !self.rows_built || self.rows_stride != self.ent.stride {
                self.build_rows();
            }
        } else {
            mov.extend((0..nt).filter(|&j| self.lb[j] < self.ub[j]).map(|j| j as u32));
        }
        let mut it = 0u64;
        let mut restarts = 0;
        let mut need_full = true;
        // the objective, tracked through the pivots (each adds d_q times q's step) and recomputed at every refresh
        let mut zt = f64::NEG_INFINITY;
        let mut fresh;
        loop {
            it += 1;
            self.iters += 1;
            if it > max_iter {
                self.hit_limit = true;
                return LpStatus::Failed;
            }
            if self.since >= 40 {
                need_full = true;
                if !self.factor() {
                    restarts += 1;
                    if restarts > 3 {
                        return LpStatus::Failed;
                    }
                    self.repair();
                    if !self.factor() {
                        self.slack_basis();
                        if !self.factor() {
                            return LpStatus::Failed;
                        }
                    }
                }
            }
            fresh = false;
            if need_full {
                self.refresh();
                need_full = false;
                fresh = true;
                if self.cutoff < f64::INFINITY {
                    zt = self.objective();
                }
            }
            // (confirmed on the objective computed from the current values, not only the tracked one)
            if zt >= self.cutoff && self.objective() >= self.cutoff {
                return LpStatus::Cutoff;
            }
            let mut r = usize::MAX;
            let mut worst = 0.0;
            let mut below = false;
            let bland = it > 5000;
            for i in 0..n {
                let j = self.basis[i];
                let x = self.xb[i];
                let (l, u) = (self.lb[j], self.ub[j]);
                if x < l - 1e-9 * (1.0 + l.abs()) {
                    let v = if bland { 1.0 / (1.0 + j as f64) } else { (l - x) / (1.0 + l.abs()) };
                    if v > worst {
                        worst = v;
                        r = i;
                        below = true;
                    }
                } else if x > u + 1e-9 * (1.0 + u.abs()) {
                    let v = if bland { 1.0 / (1.0 + j as f64) } else { (x - u) / (1.0 + u.abs()) };
                    if v > worst {
                        worst = v;
                        r = i;
                        below = false;
                    }
                }
            }
            if r == usize::MAX {
                if !fresh {
                    need_full = true; // confirm on freshly computed values
                    continue;
                }
                self.snapshot_after_pivots();
                return LpStatus::Optimal;
            }
            let rho = &self.binv[r * n..(r + 1) * n];
            let dtol = 1e-11;
            let mut tmax = f64::INFINITY;
            // alpha_j for the movable nonbasic columns, and (without data-dependent branches) the lists of nonzero
            // alphas (the dual update's columns) and of ratio-test candidates (in column order)
            cand.clear();
            nz.clear();
            let (mut nnz, mut ncand) = (0usize, 0usize);
            // candidate sign: below -> (!up && a < -atol) || (up && a > atol), above -> the mirror (is_cand)
            let sgn = if below { -1.0 } else { 1.0 };
            if rowwise {
                // row-wise: only the rows where rho is nonzero (a third of them, typically). Each column's entries
                // are added in ascending row order from 0.0, i.e. the same sum as column-wise up to the order of
                // its first two terms (exact: a + b == b + a), skipping only exact-zero products.
                for &j in self.touched[..self.ntouched].iter() {
                    self.alpha[j as usize] = 0.0;
                }
                self.ntouched = 0;
                self.stamp = self.stamp.wrapping_add(1);
                if self.stamp == 0 {
                    for v in self.mark.iter_mut() {
                        *v = 0;
                    }
                    self.stamp = 1;
                }
                let stamp = self.stamp;
                if self.touched.len() <= nt {
                    self.touched.resize(nt + 1, 0); // +1: the branch-free write lands one past the last distinct column
                }
                let mut nt_ = 0usize;
                for i in 0..n {
                    let ri = rho[i];
                    if ri == 0.0 {
                        continue;
                    }
                    let (a0, a1) = (self.row_start[i] as usize, self.row_start[i + 1] as usize);
                    for &(j, idx) in &self.row_ent[a0..a1] {
                        let ju = j as usize;
                        self.touched[nt_] = j;
                        nt_ += (self.mark[ju] != stamp) as usize;
                        self.mark[ju] = stamp;
                        self.alpha[ju] += ri * self.ent.data[idx as usize].1;
                    }
                }
                self.ntouched = nt_;
                cand.resize(nt_, 0);
                nz.resize(nt_, 0);
                for &j in self.touched[..nt_].iter() {
                    let ju = j as usize;
                    // movable and nonbasic (the column-wise path's mov filter and basic skip), branch-free
                    let ok = (self.pos[ju] < 0) & (self.lb[ju] < self.ub[ju]);
                    let a = self.alpha[ju];
                    nz[nnz] = j;
                    nnz += (ok & (a != 0.0)) as usize;
                    let s = if self.at_upper[ju] { -sgn * a } else { sgn * a };
                    cand[ncand] = j;
                    ncand += (ok & (s > 1e-9)) as usize;
                }
                nz.truncate(nnz);
                cand.truncate(ncand);
            }
            if !rowwise {
                cand.resize(mov.len(), 0);
                nz.resize(mov.len(), 0);
            }
            for &j in mov.iter() {
                let ju = j as usize;
                if self.pos[ju] >= 0 {
                    continue;
                }
                let mut a = 0.0;
                for &(row, v) in &self.ent[ju] {
                    a += rho[row as usize] * v;
                }
                self.alpha[ju] = a;
                nz[nnz] = j;
                nnz += (a != 0.0) as usize;
                let s = if self.at_upper[ju] { -sgn * a } else { sgn * a };
                cand[ncand] = j;
                ncand += (s > 1e-9) as usize;
            }
            if !rowwise {
                nz.truncate(nnz);
                cand.truncate(ncand);
            }
            for &j in cand.iter() {
                let j = j as usize;
                let t = (self.d[j].abs() + dtol) / self.alpha[j].abs();
                if t < tmax {
                    tmax = t;
                }
            }
            if tmax == f64::INFINITY {
                if !fresh {
                    need_full = true;
                    continue;
                }
                self.snapshot_after_pivots();
                return LpStatus::Infeasible;
            }
            let mut q = usize::MAX;
            let mut best = 0.0;
            for &j in cand.iter() {
                let j = j as usize;
                let a = self.alpha[j];
                if self.d[j].abs() / a.abs() <= tmax {
                    // the first such column in column order (cand may be unordered): the smallest index among ties
                    if bland {
                        if a.abs() > 1e-7 && (q == usize::MAX || j < q) {
                            q = j;
                        }
                    } else if a.abs() > best || (a.abs() == best && j < q) {
                        best = a.abs();
                        q = j;
                    }
                }
            }
            if q == usize::MAX {
                return LpStatus::Failed;
            }
            for i in 0..n {
                let mut s = 0.0;
                for &(row, v) in &self.ent[q] {
                    s += self.binv[i * n + row as usize] * v;
                }
                self.w[i] = s;
            }
            let wr = self.w[r];
            if wr.abs() < 1e-12 {
                return LpStatus::Failed;
            }
            let leaving = self.basis[r];
            // primal update: q moves by t, the leaving variable lands on its violated bound
            let bound = if below { self.lb[leaving] } else { self.ub[leaving] };
            let t = (self.xb[r] - bound) / wr;
            let xq = self.nb_value(q) + t;
            zt += self.d[q] * t;
            for i in 0..n {
                self.xb[i] -= self.w[i] * t;
            }
            self.xb[r] = xq;
            // dual update
            let theta = self.d[q] / self.alpha[q];
            for &j in nz.iter() {
                let j = j as usize;
                self.d[j] -= theta * self.alpha[j];
            }
            self.d[leaving] = -theta;
            self.d[q] = 0.0;
            for t in 0..n {
                self.binv[r * n + t] /= wr;
            }
            for i in 0..n {
                if i != r {
                    let fct = self.w[i];
                    if fct != 0.0 {
                        for t in 0..n {
                            self.binv[i * n + t] -= fct * self.binv[r * n + t];
                        }
                    }
                }
            }
            self.pos[leaving] = -1;
            self.at_upper[leaving] = !below;
            self.basis[r] = q;
            self.pos[q] = r as i32;
            self.since += 1;
            self.d_fresh = false;
        }
    }
}

// ------------------------------------------------------------------ branch and bound

struct Delta {
    parent: Option<Arc<Delta>>,
    fixes: Vec<(u32, u8)>,
    caps: Vec<(u32, f64)>,
}

struct Node {
    lb: f64,
    delta: Arc<Delta>,
    basis: Vec<u32>,
}

impl PartialEq for Node {
    fn eq(&self, o: &Self) -> bool {
        self.lb == o.lb
    }
}
impl Eq for Node {}
impl PartialOrd for Node {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Node {
    fn cmp(&self, o: &Self) -> Ordering {
        o.lb.partial_cmp(&self.lb).unwrap_or(Ordering::Equal)
    }
}

#[derive(Clone)]
struct Solver<'a> {
    inst: &'a Inst,
    lp: Lp,
    st: Vec<u8>,
    m: Vec<f64>,
    cap: Vec<f64>,
    hi: Vec<f64>,
    cuts: Vec<(u8, u32)>,
    has_cut: Vec<bool>,
    // per rail: its (cut row, coefficient on x, coefficient on y) in the loaded LP's cut rows (free rails only);
    // a probe fixing the rail on moves the y part into the row's bounds
    cutcoef: Vec<Vec<(u32, f64, f64)>>,
    defer_cuts: bool, // the root's cut loop waits until its heuristics have run (DEFER_CUTS)
    ub_val: f64,
    best_x: Vec<f64>,
    best_y: Vec<u8>,
    gap: f64,
    nodes: u64,
    lp_fail: bool,
    heur_found: u64,
    opts: u32,
    sep_rounds: usize,
    max_pool: usize,
    pc_sum: Vec<f64>, // strong-branching gains per unit of fractionality, per rail and direction (off, on)
    pc_cnt: Vec<u32>,
    loaded: Vec<(u8, u64)>, // per rail: the (state, m bits) its LP columns were last written with (load_lp)
    loaded_cs: f64,
    node_cst: f64, // the objective constant of the node LP last loaded by solve_node
    cs: f64, // the LP's costs are the fees times this (cost_scale); bounds and incumbents stay in fee units
    deadline: (Instant, f64), // the caller's start and time limit: the core heuristic's sub-search stays within it
    // CORE_OVERLAP: the root's core sub-searches after its cuts are not run at the root but recorded here (what
    // they rank by); the first search thread runs them while the other starts on the tree (`search_worker`)
    core_defer: bool,
    deferred_core: Option<CoreSnap>,
}

/// What the root's core sub-searches take from the LP they rank by: its support (rails carrying flow or a fee
/// column, and rails fixed on) and, for the free rails outside it, the order in which each ranking adds them. The
/// incumbent's rails are added when a sub-search starts (`core_keep`), so a recorded sub-search gets the same rails as
/// one run at the root with the same incumbent.
#[derive(Clone)]
struct CoreSnap {
    support: Vec<bool>,
    by_fee: Vec<u32>,
    by_amount: Vec<u32>,
}

enum NodeOut {
    Pruned,
    Branch { lb: f64, rail: usize, on_first: bool, extra: Vec<(u32, u8)>, caps: Vec<(u32, f64)>, lb_on: f64, lb_off: f64 },
}

impl<'a> Solver<'a> {
    fn prune_level(&self) -> f64 {
        if self.ub_val == f64::INFINITY {
            f64::INFINITY
        } else {
            self.ub_val - self.gap * self.ub_val.abs()
        }
    }

    fn node_bounds(&mut self) -> bool {
        let inst = self.inst;
        let k = inst.k;
        let ubv = self.ub_val;
        for r in 0..k {
            if self.st[r] == OFF {
                self.m[r] = 0.0;
                continue;
            }
            let mut m = inst.mm[r].min(self.cap[r]);
            if ubv < f64::INFINITY {
                let room = ubv * (1.0 + 1e-9) - inst.f[r];
                if room < 0.0 {
                    m = -1.0;
                } else if inst.p[r] > 0.0 {
                    m = m.min(room / inst.p[r]);
                }
            }
            self.m[r] = m;
        }
        for v in 0..inst.n {
            self.hi[v] = inst.hi[v];
        }
        if self.opts & 64 != 0 {
            let mut mu = vec![0.0f64; inst.n];
            for r in 0..k {
                if self.st[r] != OFF && self.m[r] >= inst.me[r] {
                    let c = (1.0 - inst.p[r]) * inst.me[r] - inst.f[r];
                    if c > mu[inst.to[r]] {
                        mu[inst.to[r]] = c;
                    }
                }
            }
            for v in 0..inst.n {
                self.hi[v] = inst.hi[v].min((inst.lo[v] + mu[v] * (1.0 + 1e-12) + 1e-12).max(0.0));
            }
        }
        if self.opts & 1 != 0 {
            let mut maxin = vec![0.0; inst.n];
            let mut maxout = vec![0.0; inst.n];
            for _pass in 0..2 {
                for v in 0..inst.n {
                    maxin[v] = 0.0;
                    maxout[v] = 0.0;
                }
                // the same sums in the same order, with each venue's running sum kept in a register while
                // consecutive rails share it (rails come sorted by source: no store-to-load chain per addition)
                let (mut cu, mut au) = (usize::MAX, 0.0f64);
                let (mut cw, mut aw) = (usize::MAX, 0.0f64);
                for r in 0..k {
                    let m = self.m[r];
                    if self.st[r] == OFF || m < inst.me[r] {
                        continue;
                    }
                    let (u, w) = (inst.from[r], inst.to[r]);
                    if w != cw {
                        if cw != usize::MAX {
                            maxin[cw] = aw;
                        }
                        cw = w;
                        aw = maxin[w];
                    }
                    aw += ((1.0 - inst.p[r]) * m - inst.f[r]).max(0.0);
                    if u != cu {
                        if cu != usize::MAX {
                            maxout[cu] = au;
                        }
                        cu = u;
                        au = maxout[u];
                    }
                    au += m;
                }
                if cw != usize::MAX {
                    maxin[cw] = aw;
                }
                if cu != usize::MAX {
                    maxout[cu] = au;
                }
                for r in 0..k {
                    if self.st[r] == OFF || self.m[r] < inst.me[r] {
                        continue;
                    }
                    let (u, w) = (inst.from[r], inst.to[r]);
                    let a = maxin[u] - inst.lo[u];
                    let b = (self.hi[w] + maxout[w] + inst.f[r]) / (1.0 - inst.p[r]);
                    let m = self.m[r].min(a).min(b);
                    self.m[r] = m * (1.0 + 1e-12) + 1e-12;
                }
            }
        }
        for r in 0..k {
            if self.st[r] == OFF {
                continue;
            }
            let me = inst.me[r];
            let mut m = self.m[r];
            if m < me {
                if m >= me - 1e-9 * (1.0 + me) {
                    m = me;
                } else {
                    if self.st[r] == ON {
                        return false;
                    }
                    m = 0.0;
                }
            }
            if self.st[r] == FREE && m > 0.0 && (1.0 - inst.p[r]) * m - inst.f[r] <= 1e-12 * (1.0 + m) {
                m = 0.0;
            }
            self.m[r] = m;
        }
        true
    }

    /// Load the node LP. Columns: x_r = r, fee column of r = k + r. Returns the objective constant.
    /// Coefficients of y_r in terms of the LP columns: (coef on x_r, coef on fee column, constant).
    #[inline]
    fn y_terms(&self, r: usize) -> (f64, f64, f64) {
        match self.st[r] {
            ON => (0.0, 0.0, 1.0),
            OFF => (0.0, 0.0, 0.0),
            _ => {
                if self.m[r] > 0.0 { (1.0 / self.m[r], 1.0, 0.0) } else { (0.0, 0.0, 0.0) }
            }
        }
    }

    fn load_lp(&mut self) -> f64 {
        let inst = self.inst;
        let (k, n) = (inst.k, inst.n);
        let covers = self.opts & 256 != 0;
        let fee_cols = covers || !self.cuts.is_empty();
        let mut cst = 0.0;
        let cs = self.cs;
        let nr = inst.nrows + self.cuts.len();
        self.lp.resize_rows(nr);
        self.lp.d_fresh = false;
        let mut shift = vec![0.0; nr];
        // a rail's two columns are a function of its state and bound m (and the cost scale): rewrite only the rails
        // whose (state, m) changed since the last load (no cut rows: those append entries and change the rows)
        let reuse = self.cuts.is_empty() && self.loaded_cs.to_bits() == cs.to_bits() && self.loaded.len() == k;
        if !reuse {
            self.loaded.clear();
            self.loaded.resize(k, (u8::MAX, 0));
        }
        for r in 0..k {
            let m = self.m[r];
            let (f, p) = (inst.f[r], inst.p[r]);
            let (u, w) = (inst.from[r] as u32, inst.to[r] as u32);
            let cv = inst.cover[inst.to[r]];
            let key = (self.st[r], m.to_bits());
            if reuse && self.loaded[r] == key {
                if self.st[r] == ON {
                    cst += f;
                    shift[w as usize] += f;
                    if covers && cv >= 0 {
                        shift[cv as usize] -= 1.0;
                    }
                }
                continue;
            }
            self.loaded[r] = key;
            let lp = &mut self.lp;
            lp.lb[k + r] = 0.0;
            lp.ub[k + r] = 0.0;
            lp.c[k + r] = f * cs;
            // every column keeps one pattern for the whole search (the row-wise pricing index relies on it): the
            // amount column (u, w[, cover row]), the fee column (w[, cover row]); explicit zeros where a fixed rail
            // has no entry (they add exact zeros to every sum)
            let has_cv = covers && cv >= 0;
            let (amt_w, amt_cv, fee_cv);
            if self.st[r] == ON {
                lp.c[r] = p * cs;
                amt_w = 1.0 - p;
                amt_cv = 0.0;
                fee_cv = 0.0;
                lp.lb[r] = inst.me[r];
                lp.ub[r] = m;
                cst += f;
                shift[w as usize] += f;
                if covers && cv >= 0 {
                    shift[cv as usize] -= 1.0;
                }
            } else if self.st[r] == OFF || m <= 0.0 {
                lp.c[r] = p * cs;
                amt_w = 1.0 - p;
                amt_cv = 0.0;
                fee_cv = 0.0;
                lp.lb[r] = 0.0;
                lp.ub[r] = 0.0;
            } else {
                lp.c[r] = (p + f / m) * cs;
                amt_w = 1.0 - p - f / m;
                amt_cv = 1.0 / m;
                fee_cv = 1.0;
                lp.lb[r] = 0.0;
                lp.ub[r] = m;
                if fee_cols {
                    lp.ub[k + r] = 1.0;
                }
            }
            if has_cv {
                lp.ent.set(r, &[(u, -1.0), (w, amt_w), (cv as u32, amt_cv)]);
                lp.ent.set(k + r, &[(w, -f), (cv as u32, fee_cv)]);
            } else {
                lp.ent.set(r, &[(u, -1.0), (w, amt_w)]);
                lp.ent.set(k + r, &[(w, -f)]);
            }
        }
        self.lp.rowwise = self.cuts.is_empty();
        if self.cuts.is_empty() {
            self.loaded_cs = cs;
        } else {
            self.loaded.clear();
        }
        // cut rows (all "<= 0" before constants): S(r): x_r - s_u y_r - I_u ; D(r): credit_r - hi_w y_r - O_w
        // Validity (the planner's argument, docs/route-planner.md "The model"): S(r) holds for every plan (u ends at
        // or above its target, so it sends at most its surplus s_u plus what it is credited, and nothing on r when
        // y_r = 0); D(r) holds for the least-moving optimum, the same plan the venue rows' upper bounds hi keep
        // (hi_w = t_w - b_w + mu_w, or 0: w never ends more than mu_w above target, so what r credits beyond hi_w
        // leaves again). Both are global: the pool built at the root is loaded at every node, and the probes keep
        // the rows (a relaxation of the child: see `probe`).
        let base = inst.nrows;
        for r in 0..k {
            self.cutcoef[r].clear();
        }
        for (ci, &(kind, r)) in self.cuts.iter().enumerate() {
            let row = (base + ci) as u32;
            let r = r as usize;
            let (u, w) = (inst.from[r], inst.to[r]);
            // every rail's columns carry its cut entries whatever its state (a fixed column's entries do not change
            // the LP, they keep a parent's basis non-singular in the child): y_r = x_r/m + l_r for a free rail, a
            // constant 1 for a rail fixed on (x_r keeps ex), 0 for a rail fixed off (its columns fixed at 0)
            let mut terms: Vec<(usize, f64, f64)> = Vec::new();
            if kind == 0 {
                let s_u = (-inst.lo[u]).max(0.0);
                // x_r - s_u y_r - I_u,  I_u = sum_{r' into u} ((1-p') x' - f' y')
                terms.push((r, 1.0, -s_u));
                for &r2 in &inst.ins[u] {
                    terms.push((r2, -(1.0 - inst.p[r2]), inst.f[r2]));
                }
            } else {
                // (1-p) x_r - (f + hw) y_r - O_w
                let hw = self.hi[w];
                terms.push((r, 1.0 - inst.p[r], -(inst.f[r] + hw)));
                for &r2 in &inst.outs[w] {
                    terms.push((r2, -1.0, 0.0));
                }
            }
            let mut rhs = 0.0;
            for (r2, ex, ey) in terms {
                let free = self.st[r2] == FREE && self.m[r2] > 0.0;
                let ax = if free { 1.0 / self.m[r2] } else if self.st[r2] == ON { 0.0 } else { 1.0 / inst.mm[r2].max(1e-300) };
                if self.st[r2] == ON {
                    rhs -= ey;
                }
                if free {
                    self.cutcoef[r2].push((row, ex, ey));
                }
                let cx = ex + ey * ax;
                if cx != 0.0 {
                    self.lp.ent.push(r2, (row, cx));
                }
                if ey != 0.0 {
                    self.lp.ent.push(k + r2, (row, ey));
                }
            }
            // slack bounds: activity <= rhs; lower bound = smallest possible activity (finite: all columns boxed)
            let sc = 2 * k + base + ci;
            self.lp.c[sc] = 0.0;
            self.lp.ub[sc] = rhs;
            self.lp.lb[sc] = f64::NEG_INFINITY; // filled below
        }
        let lp = &mut self.lp;
        let sc = 2 * k;
        for v in 0..n {
            lp.c[sc + v] = 0.0;
            lp.lb[sc + v] = inst.lo[v] + shift[v];
            lp.ub[sc + v] = self.hi[v] + shift[v];
        }
        for i in n..base {
            lp.c[sc + i] = 0.0;
            lp.lb[sc + i] = if covers { inst.cover_rhs[i - n] + shift[i] } else { 0.0 };
            lp.ub[sc + i] = (k as f64) * 2.0 + 2.0;
        }
        if !self.cuts.is_empty() {
            let mut minact = vec![0.0; self.cuts.len()];
            for j in 0..2 * k {
                for &(row, v) in &lp.ent[j] {
                    let row = row as usize;
                    if row >= base {
                        minact[row - base] += (v * lp.lb[j]).min(v * lp.ub[j]);
                    }
                }
            }
            for ci in 0..self.cuts.len() {
                let j = sc + base + ci;
                lp.lb[j] = minact[ci].min(lp.ub[j]) - 1.0;
            }
        }
        cst
    }

    /// Add violated source/destination bound cuts for rails carrying flow. Returns how many were added.
    fn separate(&mut self, max_pool: usize) -> usize {
        let inst = self.inst;
        let k = inst.k;
        let n = inst.n;
        let mut inflow = vec![0.0; n];
        let mut outflow = vec![0.0; n];
        let mut y = vec![0.0; k];
        for r in 0..k {
            if self.st[r] == OFF {
                continue;
            }
            let x = self.lp.value(r);
            let (ax, al, ac) = self.y_terms(r);
            y[r] = ax * x + al * self.lp.value(k + r) + ac;
            inflow[inst.to[r]] += (1.0 - inst.p[r]) * x - inst.f[r] * y[r];
            outflow[inst.from[r]] += x;
        }
        let mut cands: Vec<(f64, u8, u32)> = Vec::new();
        for r in 0..k {
            if self.st[r] != FREE || self.m[r] <= 0.0 {
                continue;
            }
            let x = self.lp.value(r);
            if x <= 1e-9 {
                continue;
            }
            let (u, w) = (inst.from[r], inst.to[r]);
            let s_u = (-inst.lo[u]).max(0.0);
            let tol = 1e-7 * (1.0 + x);
            let v0 = x - s_u * y[r] - inflow[u];
            if v0 > tol && !self.has_cut[r * 2] {
                cands.push((v0 / (1.0 + x), 0, r as u32));
            }
            let credit = (1.0 - inst.p[r]) * x - inst.f[r] * y[r];
            let v1 = credit - self.hi[w] * y[r] - outflow[w];
            if v1 > tol && !self.has_cut[r * 2 + 1] {
                cands.push((v1 / (1.0 + x), 1, r as u32));
            }
        }
        cands.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap());
        let mut added = 0;
        for (_, kind, r) in cands {
            if self.cuts.len() >= max_pool {
                break;
            }
            self.has_cut[r as usize * 2 + kind as usize] = true;
            self.cuts.push((kind, r));
            added += 1;
        }
        added
    }

    /// Drop the cut rows the current LP solution leaves slack (their slack basic and below its bound): the basis
    /// without their slacks stays a basis of the smaller LP. Returns that basis and the at-upper flags, remapped to
    /// the new column indices; the LP must be reloaded (load_lp) before it is used. A dropped cut is not separated
    /// again (has_cut stays set), so the loop cannot cycle. Dropping rows only relaxes the LP.
    fn purge_cuts(&mut self) -> (Vec<usize>, Vec<bool>) {
        let k = self.inst.k;
        let base = self.inst.nrows;
        let sc = 2 * k + base;
        let nc = self.cuts.len();
        let mut newidx = vec![usize::MAX; nc];
        let mut kept = Vec::new();
        for ci in 0..nc {
            let j = sc + ci;
            let (v, ub) = (self.lp.value(j), self.lp.ub[j]);
            let slack = self.lp.pos[j] >= 0 && v < ub - 1e-7 * (1.0 + ub.abs());
            if !slack {
                newidx[ci] = kept.len();
                kept.push(self.cuts[ci]);
            }
        }
        let mut basis = Vec::with_capacity(self.lp.nr);
        for &j in &self.lp.basis {
            if j >= sc {
                if newidx[j - sc] != usize::MAX {
                    basis.push(sc + newidx[j - sc]);
                }
            } else {
                basis.push(j);
            }
        }
        let mut up = self.lp.at_upper[..sc].to_vec();
        for ci in 0..nc {
            if newidx[ci] != usize::MAX {
                up.push(self.lp.at_upper[sc + ci]);
            }
        }
        self.cuts = kept;
        (basis, up)
    }

    /// y of rail r in the current LP solution (x/m + fee column).
    fn y_of(&self, r: usize) -> f64 {
        let k = self.inst.k;
        let m = self.m[r];
        let x = self.lp.value(r);
        (if m > 0.0 { x / m } else { 0.0 }) + self.lp.value(k + r)
    }

    fn record(&mut self) {
        let inst = self.inst;
        let k = inst.k;
        let mut z = 0.0;
        let mut xs = vec![0.0; k];
        let mut ys = vec![0u8; k];
        for r in 0..k {
            let x = self.lp.value(r);
            let on = match self.st[r] {
                ON => true,
                OFF => false,
                _ => self.m[r] > 0.0 && self.y_of(r) >= 0.5,
            };
            if on {
                ys[r] = 1;
                xs[r] = x;
                z += inst.f[r] + inst.p[r] * x;
            }
        }
        if z < self.prune_level() {
            self.ub_val = z;
            self.best_x = xs;
            self.best_y = ys;
        }
    }

    fn support_heuristic(&mut self) {
        let k = self.inst.k;
        let saved_st = self.st.clone();
        let saved_m = self.m.clone();
        let saved_basis = self.lp.basis.clone();
        let saved_up = self.lp.at_upper.clone();
        let mut any_free = false;
        for r in 0..k {
            let x = self.lp.value(r);
            if self.st[r] == FREE {
                any_free = true;
                self.st[r] = if x > 1e-9 * (1.0 + self.m[r]) { ON } else { OFF };
            }
        }
        if any_free && self.node_bounds() {
            let _ = self.load_lp();
            if let LpStatus::Optimal = self.lp.solve(10_000) {
                let before = self.ub_val;
                self.record();
                if self.ub_val < before {
                    self.heur_found += 1;
                }
            }
        }
        self.st = saved_st;
        self.m = saved_m;
        self.lp.set_basis(&saved_basis);
        self.lp.at_upper = saved_up;
    }

    /// Core heuristic: the same B&B on the root LP's support, the incumbent's rails and the ROOT_CORE_EXTRA
    /// rails cheapest to switch on (by reduced cost); then (CORE_BY_AMOUNT), with that incumbent, on the support, the
    /// incumbent's rails and the ROOT_CORE_BY_AMOUNT_EXTRA rails cheapest to send a typical amount on. Any plan either
    /// finds is a plan of the full model.
    fn core_heuristic(&mut self) {
        if self.core_defer && !self.defer_cuts {
            // (the second call at the root: after its cuts)
            self.deferred_core = Some(self.core_snap(true, self.opts & CORE_BY_AMOUNT != 0));
            return;
        }
        self.core_search(ROOT_CORE_EXTRA, 0.5, 50_000, false);
        if self.opts & CORE_BY_AMOUNT != 0 {
            self.core_search(ROOT_CORE_BY_AMOUNT_EXTRA, 0.5, 50_000, true);
        }
    }

    /// The root's core sub-searches recorded by `core_heuristic` (CORE_OVERLAP), in the order the root would have
    /// run them, each pruning against the best value known when it starts (`ub`: the other thread's too). Stops
    /// before a sub-search once `stop` says so. Returns the value of the plan found here, if one was.
    fn run_core_snap(&mut self, snap: &CoreSnap, ub: impl Fn() -> f64, stop: impl Fn() -> bool) -> Option<f64> {
        let mut found = None;
        for by_amount in [false, true] {
            if by_amount && self.opts & CORE_BY_AMOUNT == 0 {
                continue;
            }
            if stop() {
                break;
            }
            self.ub_val = self.ub_val.min(ub());
            let extra = if by_amount { ROOT_CORE_BY_AMOUNT_EXTRA } else { ROOT_CORE_EXTRA };
            let keep = self.core_keep(snap, extra, by_amount);
            let had = self.heur_found;
            CORE_OVERLAP_RUNS.fetch_add(1, AtomicOrdering::Relaxed);
            self.core_run(&keep, 0.5, 50_000);
            if self.heur_found > had {
                found = Some(self.ub_val);
            }
        }
        found
    }

    /// The core heuristic's search on the current LP's support, the incumbent's rails and the `extra` rails
    /// cheapest to switch on, within `seconds` (and the caller's deadline) and `nodes`. At a node (RINS-like,
    /// opts 32768) the sub-model is still the full model restricted to those rails, not the node's subproblem:
    /// any plan it finds is a plan of the full model, and it only ever lowers the incumbent.
    /// `by_amount`: rank the extra rails by the reduced-cost bound on sending the mean deficit (at most m) on them,
    /// dx x + dl (1 - x/m), instead of by the cost of switching them on at their minimum.
    fn core_search(&mut self, extra: usize, seconds: f64, nodes: u64, by_amount: bool) {
        let snap = self.core_snap(!by_amount, by_amount);
        let keep = self.core_keep(&snap, extra, by_amount);
        self.core_run(&keep, seconds, nodes);
    }

    /// The current LP's support and the rankings asked for (the other one left empty).
    fn core_snap(&mut self, by_fee: bool, by_amount: bool) -> CoreSnap {
        let inst = self.inst;
        let k = inst.k;
        if !self.lp.d_fresh {
            self.lp.compute_dual();
        }
        let mut support = vec![false; k];
        for r in 0..k {
            if self.st[r] == OFF {
                continue;
            }
            if self.lp.value(r) > 1e-9 || self.lp.value(k + r) > 1e-9 || self.st[r] == ON {
                support[r] = true;
            }
        }
        let by_fee = if by_fee { self.core_rank(&support, false) } else { Vec::new() };
        let by_amount = if by_amount { self.core_rank(&support, true) } else { Vec::new() };
        CoreSnap { support, by_fee, by_amount }
    }

    /// The free rails outside `support`, best first by the chosen ranking (a stable sort: ties in rail order).
    fn core_rank(&self, support: &[bool], by_amount: bool) -> Vec<u32> {
        let inst = self.inst;
        let k = inst.k;
        // the mean deficit (by_amount only)
        let (short, total) = if by_amount {
            inst.lo.iter().filter(|&&l| l > 0.0).fold((0usize, 0.0f64), |(c, t), &l| (c + 1, t + l))
        } else {
            (0, 0.0)
        };
        let amount = if short > 0 { total / short as f64 } else { 0.0 };
        let mut rest: Vec<(f64, usize)> = (0..k)
            .filter(|&r| !support[r] && self.st[r] == FREE && self.m[r] > 0.0)
            .map(|r| {
                let dx = (self.lp.d[r] / self.cs).max(0.0);
                if by_amount {
                    let (m, jl) = (self.m[r], k + r);
                    let x = amount.min(m);
                    let dl = if self.lp.pos[jl] >= 0 { 0.0 } else { (self.lp.d[jl] / self.cs).max(0.0) };
                    (dx * x + dl * (1.0 - x / m), r)
                } else {
                    (dx * inst.me[r] + inst.f[r] + inst.p[r] * inst.me[r], r)
                }
            })
            .collect();
        rest.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        rest.into_iter().map(|(_, r)| r as u32).collect()
    }

    /// The sub-model's rails: the snapshot's support, the incumbent's rails and the first `extra` ranked rails
    /// that are neither.
    fn core_keep(&self, snap: &CoreSnap, extra: usize, by_amount: bool) -> Vec<usize> {
        let k = self.inst.k;
        let mut inc = snap.support.clone();
        for r in 0..k {
            if self.best_y[r] == 1 && self.st[r] != OFF {
                inc[r] = true;
            }
        }
        let ranked = if by_amount { &snap.by_amount } else { &snap.by_fee };
        let mut added = 0;
        for &r in ranked {
            if added == extra {
                break;
            }
            let r = r as usize;
            if !inc[r] {
                inc[r] = true;
                added += 1;
            }
        }
        (0..k).filter(|&r| inc[r]).collect()
    }

    fn core_run(&mut self, keep: &[usize], seconds: f64, nodes: u64) {
        let inst = self.inst;
        let k = inst.k;
        if keep.len() >= k {
            return;
        }
        let sub = build(
            inst.n,
            keep.len(),
            keep.iter().map(|&r| inst.from[r]).collect(),
            keep.iter().map(|&r| inst.to[r]).collect(),
            keep.iter().map(|&r| inst.f[r]).collect(),
            keep.iter().map(|&r| inst.p[r]).collect(),
            keep.iter().map(|&r| inst.me[r]).collect(),
            keep.iter().map(|&r| inst.mm[r]).collect(),
            inst.lo.clone(),
            inst.hi.clone(),
            self.opts,
        );
        let left = (self.deadline.1 - self.deadline.0.elapsed().as_secs_f64()).clamp(0.0, seconds);
        let (x, y, info) = solve(&sub, self.ub_val, self.gap, left, nodes, self.opts & !(8192 | 16 | 8 | 32768 | PARALLEL | 1024 | 2048 | PURGE_CUTS));
        if info[1] < self.ub_val && y.iter().any(|&v| v == 1) {
            let mut bx = vec![0.0; k];
            let mut by = vec![0u8; k];
            for (i, &r) in keep.iter().enumerate() {
                bx[r] = x[i];
                by[r] = y[i];
            }
            self.ub_val = info[1];
            self.best_x = bx;
            self.best_y = by;
            self.heur_found += 1;
        }
    }

    fn apply(&mut self, delta: &Arc<Delta>) {
        let k = self.inst.k;
        for r in 0..k {
            self.st[r] = FREE;
            self.cap[r] = f64::INFINITY;
        }
        let mut cur: Option<&Arc<Delta>> = Some(delta);
        while let Some(d) = cur {
            for &(r, s) in &d.fixes {
                self.st[r as usize] = s;
            }
            for &(r, c) in &d.caps {
                let r = r as usize;
                if c < self.cap[r] {
                    self.cap[r] = c;
                }
            }
            cur = d.parent.as_ref();
        }
    }

    /// The node LP's dual simplex; if it fails numerically (a basis still singular after its repairs), once more from
    /// the slack basis (always regular; every reduced cost priced afresh). Seen on 30:2 USDT with two search threads,
    /// about one run in ten (once in thirty runs with neither reduced-cost rule): each time the node's LP was
    /// infeasible, which the retry proved; before, the whole search ended as an LP failure and the asset went to
    /// HiGHS. A failure on the retry too stays an LP failure (the caller marks the search's answer as not to be
    /// trusted).
    fn solve_node_lp(&mut self) -> LpStatus {
        match self.lp.solve(50_000) {
            LpStatus::Failed if !self.lp.hit_limit => {
                self.lp.slack_basis();
                self.lp.solve(50_000)
            }
            status => status,
        }
    }

    fn solve_node(&mut self, basis: &[u32]) -> Option<f64> {
        if !self.node_bounds() {
            return None;
        }
        let mut cst = self.load_lp();
        let b: Vec<usize> = basis.iter().map(|&j| j as usize).collect();
        self.lp.set_basis(&b);
        let rounds = if self.opts & 1024 == 0 || self.defer_cuts { 0 } else if self.nodes <= 1 { 50 } else { self.sep_rounds };
        let mut round = 0;
        loop {
            match self.solve_node_lp() {
                LpStatus::Optimal => {}
                LpStatus::Infeasible => return None,
                LpStatus::Failed | LpStatus::Cutoff => {
                    // (node LPs run without a cutoff)
                    self.lp_fail = true;
                    return None;
                }
            }
            if round >= rounds || self.lp.objective() / self.cs + cst >= self.prune_level() {
                break;
            }
            round += 1;
            let purge = self.opts & PURGE_CUTS != 0 && self.nodes <= 1;
            let (mut keep, mut up) = if purge { self.purge_cuts() } else { (self.lp.basis.clone(), self.lp.at_upper.clone()) };
            if self.separate(self.max_pool) == 0 {
                if purge && keep.len() < self.lp.nr {
                    // rows were dropped: reload the smaller LP and solve it again (its basis stays optimal)
                    cst = self.load_lp();
                    self.lp.set_basis(&keep);
                    for j in 0..up.len().min(self.lp.at_upper.len()) {
                        self.lp.at_upper[j] = up[j];
                    }
                    match self.solve_node_lp() {
                        LpStatus::Optimal => {}
                        LpStatus::Infeasible => return None,
                        LpStatus::Failed | LpStatus::Cutoff => {
                            self.lp_fail = true;
                            return None;
                        }
                    }
                }
                break;
            }
            if !purge {
                keep = self.lp.basis.clone();
                up = self.lp.at_upper.clone();
            }
            cst = self.load_lp();
            self.lp.set_basis(&keep);
            for j in 0..up.len().min(self.lp.at_upper.len()) {
                self.lp.at_upper[j] = up[j];
            }
        }
        self.node_cst = cst;
        Some(self.lp.objective() / self.cs + cst)
    }

    /// Strong-branching probe without reloading the LP: only rail r's two columns (and, fixed on, its
    /// destination's row bounds) change; every other rail keeps this node's bound m, which is no tighter than
    /// the child's own node_bounds, so the probe's LP is a relaxation of the child's LP. Returns the LP value
    /// (infinity if infeasible) and whether it was solved to optimality. Needs the node LP loaded.
    /// Cut rows (opts 1024) stay in: they hold for the kept optimum at every node; fixed off, r's columns are
    /// fixed at 0 (the rows see x_r = y_r = 0, as in the child); fixed on, y_r is the constant 1 (its coefficient
    /// moves into the row's bounds, as load_lp does for a rail fixed on) and x_r keeps its own coefficient; the
    /// other rails' y = x/m + l with this node's m >= the child's, so every child plan is a point of this LP.
    fn probe(&mut self, r: usize, on: bool, node_basis: &[usize], node_up: &[bool], iters: u64, cutoff: Option<f64>) -> (f64, bool) {
        let inst = self.inst;
        let k = inst.k;
        let (u, w) = (inst.from[r], inst.to[r]);
        let (f, p, m) = (inst.f[r], inst.p[r], self.m[r]);
        if on && m < inst.me[r] {
            return (f64::INFINITY, true);
        }
        let sc = 2 * k;
        let cv = if self.opts & 256 != 0 { inst.cover[w] } else { -1 };
        let lp = &mut self.lp;
        let sx = (lp.ent[r].to_vec(), lp.c[r], lp.lb[r], lp.ub[r]);
        let sl = (lp.lb[k + r], lp.ub[k + r]);
        let sw = (lp.lb[sc + w], lp.ub[sc + w]);
        let scv = if cv >= 0 { lp.lb[sc + cv as usize] } else { 0.0 };
        let mut cst = self.node_cst;
        let mut saved_cut_bounds: Vec<(usize, f64, f64)> = Vec::new();
        if on {
            if lp.rowwise && lp.ent[r].len() == 3 {
                // same pattern (the cover row's entry an explicit zero), as load_lp writes a rail fixed on
                let e2 = lp.ent[r][2].0;
                lp.ent.set(r, &[(u as u32, -1.0), (w as u32, 1.0 - p), (e2, 0.0)]);
            } else if lp.rowwise {
                lp.ent.set(r, &[(u as u32, -1.0), (w as u32, 1.0 - p)]);
            } else {
                lp.ent.clear(r);
                lp.ent.push(r, (u as u32, -1.0));
                lp.ent.push(r, (w as u32, 1.0 - p));
                lp.rows_built = false; // pattern changed (only with cut rows, where the row-wise index is unused)
            }
            lp.c[r] = p * self.cs;
            lp.lb[r] = inst.me[r];
            lp.ub[r] = m;
            lp.lb[k + r] = 0.0;
            lp.ub[k + r] = 0.0;
            lp.lb[sc + w] += f;
            lp.ub[sc + w] += f;
            if cv >= 0 {
                lp.lb[sc + cv as usize] -= 1.0;
            }
            // cut rows: y_r = 1 is a constant now (its coefficient moves into the row's bounds), x_r keeps its
            // own coefficient; every child point is a point of this LP (cut rows hold globally)
            for &(row, ex, ey) in &self.cutcoef[r] {
                saved_cut_bounds.push((sc + row as usize, lp.lb[sc + row as usize], lp.ub[sc + row as usize]));
                if ex != 0.0 {
                    lp.ent.push(r, (row, ex));
                }
                lp.lb[sc + row as usize] -= ey;
                lp.ub[sc + row as usize] -= ey;
            }
            cst += f;
        } else {
            lp.lb[r] = 0.0;
            lp.ub[r] = 0.0;
            lp.lb[k + r] = 0.0;
            lp.ub[k + r] = 0.0;
        }
        lp.set_basis(node_basis);
        lp.at_upper.copy_from_slice(node_up);
        if let Some(level) = cutoff {
            // stop once the probe's bound reaches `level` (in fee units; the LP's objective is scaled and leaves out
            // the fixed rails' constant), with a margin for the dual tolerances
            let c = (level - cst) * self.cs;
            lp.cutoff = c + 1e-9 * c.abs() + 1e-9;
        }
        let status = lp.solve(iters);
        lp.cutoff = f64::INFINITY;
        let out = match status {
            // (stopped at the cutoff: its objective is a bound on the probe LP, as the optimum is)
            LpStatus::Cutoff | LpStatus::Optimal => (lp.objective() / self.cs + cst, true),
            LpStatus::Infeasible => (f64::INFINITY, true),
            LpStatus::Failed => {
                // stopped early: the dual simplex's objective so far scores, it never prunes
                if lp.hit_limit { (lp.objective() / self.cs + cst, false) } else { (f64::NEG_INFINITY, false) }
            }
        };
        lp.ent.set(r, &sx.0);
        lp.c[r] = sx.1;
        lp.lb[r] = sx.2;
        lp.ub[r] = sx.3;
        lp.lb[k + r] = sl.0;
        lp.ub[k + r] = sl.1;
        lp.lb[sc + w] = sw.0;
        lp.ub[sc + w] = sw.1;
        if cv >= 0 {
            lp.lb[sc + cv as usize] = scv;
        }
        for &(j, a, b) in &saved_cut_bounds {
            lp.lb[j] = a;
            lp.ub[j] = b;
        }
        lp.d_fresh = false;
        out
    }

    /// Reduced-cost fixing for this node's subtree (RC_FEE; the node LP solved to optimality, `z` its value, its
    /// reduced costs fresh). Every plan of the subtree is a point of the node LP (a rail it uses: x = its amount in
    /// [me, m], fee column l = 1 - x/m; a rail it does not use: both 0), and every point of the LP costs at least z
    /// plus each nonbasic column's reduced cost times its distance from the bound it sits at (the basis is dual
    /// feasible). So a plan sending x on a rail r whose two columns sit at 0 costs at least
    /// z + dx x + dl (1 - x/m) (dx, dl: their reduced costs, 0 for a basic column), linear in x. If even its
    /// minimum over [me, m] leaves no room below the prune level, no plan of the subtree that uses r beats the
    /// incumbent: r is fixed off. Otherwise, if the bound grows with x (RC_CAPS), such a plan sends at most the
    /// x where it reaches the prune level: r's amount is capped there. (The older rule, opts 4 alone, is the
    /// dl = 0 case: it left out the fee column, where this LP puts most of a rail's fixed fee.)
    fn fix_by_reduced_cost(&self, z: f64, frac: usize, extra: &mut Vec<(u32, u8)>, newcaps: &mut Vec<(u32, f64)>) {
        let inst = self.inst;
        let k = inst.k;
        let room = (self.prune_level() - z) * (1.0 + 1e-9) + 1e-12;
        let lp = &self.lp;
        for r in 0..k {
            if self.st[r] != FREE || r == frac || self.m[r] <= 0.0 {
                continue;
            }
            let (jx, jl) = (r, k + r);
            if lp.pos[jx] >= 0 || lp.at_upper[jx] || lp.value(jx) > 0.0 {
                continue; // the amount column is basic or away from 0: r carries flow at this node
            }
            let dx = (lp.d[jx] / self.cs).max(0.0);
            let dl = if lp.pos[jl] >= 0 || lp.lb[jl] == lp.ub[jl] {
                0.0
            } else if lp.at_upper[jl] || lp.value(jl) > 0.0 {
                continue;
            } else {
                (lp.d[jl] / self.cs).max(0.0)
            };
            let (me, m) = (inst.me[r], self.m[r]);
            let least = (dx * me + dl * (1.0 - me / m).max(0.0)).min(dx * m);
            if least > room {
                extra.push((r as u32, OFF));
            } else if self.opts & RC_CAPS != 0 && dx * m > dl {
                let t = (room - dl) / (dx - dl / m);
                // only caps that change the LP noticeably (a cap is a node on the delta chain of the whole subtree)
                if t < 0.9 * m && t >= me {
                    newcaps.push((r as u32, t * (1.0 + 1e-9) + 1e-12));
                }
            }
        }
    }

    fn process(&mut self, delta: &Arc<Delta>, basis: &[u32], heur: bool) -> NodeOut {
        let inst = self.inst;
        let k = inst.k;
        self.nodes += 1;
        self.apply(delta);
        let z = match self.solve_node(basis) {
            Some(z) => z,
            None => return NodeOut::Pruned,
        };
        if z >= self.prune_level() {
            return NodeOut::Pruned;
        }
        let mut z = z;
        if heur {
            let nb: Vec<u32> = self.lp.basis.iter().map(|&j| j as u32).collect();
            self.support_heuristic();
            if z >= self.prune_level() {
                return NodeOut::Pruned;
            }
            z = match self.solve_node(&nb) {
                Some(z) => z,
                None => return NodeOut::Pruned,
            };
            if z >= self.prune_level() {
                return NodeOut::Pruned;
            }
        }
        if heur && self.nodes == 1 && self.opts & 8192 != 0 {
            self.core_heuristic();
            if z >= self.prune_level() {
                return NodeOut::Pruned;
            }
        }
        if self.nodes == 1 && self.defer_cuts {
            // the root's heuristics ran on the LP without cut rows (their support finds the plans); now the cut loop
            self.defer_cuts = false;
            let nb: Vec<u32> = self.lp.basis.iter().map(|&j| j as u32).collect();
            z = match self.solve_node(&nb) {
                Some(z) => z,
                None => return NodeOut::Pruned,
            };
            if z >= self.prune_level() {
                return NodeOut::Pruned;
            }
            if self.opts & CORE_AFTER_CUTS != 0 {
                self.core_heuristic();
                if z >= self.prune_level() {
                    return NodeOut::Pruned;
                }
            }
        }
        if self.opts & 32768 != 0 && self.nodes % 100 == 0 && self.ub_val < f64::INFINITY {
            // RINS-like: the core search again, on this node's LP support and the incumbent's rails
            self.core_search(10, 0.05, 2000, false);
            if z >= self.prune_level() {
                return NodeOut::Pruned;
            }
        }
        let mut frac = usize::MAX;
        let mut best_score = -1.0;
        let mut on_first = true;
        let mut cands: Vec<(f64, usize)> = Vec::new();
        for r in 0..k {
            if self.st[r] != FREE || self.m[r] <= 0.0 {
                continue;
            }
            let x = self.lp.value(r);
            let y = self.y_of(r);
            let m = self.m[r];
            let fractional = y < 1.0 - 1e-9 && (x > 1e-9 || self.lp.value(k + r) > 1e-9);
            let short = y >= 1.0 - 1e-9 && x < inst.me[r] * (1.0 - 1e-9) - 1e-12;
            if fractional || short {
                let yy = y.min(1.0);
                let score = if short {
                    inst.f[r] * 0.5
                } else if self.opts & 32 != 0 {
                    inst.f[r] * (1.0 - yy) + 1e-15
                } else if self.opts & 2 != 0 {
                    (inst.f[r] + inst.p[r] * x) * yy.min(1.0 - yy)
                } else {
                    inst.f[r] * yy.min(1.0 - yy) + 1e-15
                };
                let _ = m;
                cands.push((score, r));
                if score > best_score {
                    best_score = score;
                    frac = r;
                    on_first = yy >= 0.5;
                }
            }
        }
        if frac == usize::MAX {
            self.record();
            return NodeOut::Pruned;
        }
        let mut extra = Vec::new();
        let mut newcaps = Vec::new();
        if self.ub_val < f64::INFINITY && self.opts & (4 | 128) != 0 {
            if !self.lp.d_fresh {
                self.lp.compute_dual(); // (the node's final solve computed these already, in the same way)
            }
            if self.opts & 4 != 0 && self.opts & RC_FEE != 0 {
                self.fix_by_reduced_cost(z, frac, &mut extra, &mut newcaps);
            } else {
                let lim = self.prune_level();
                for r in 0..k {
                    if self.st[r] != FREE || self.lp.pos[r] >= 0 || r == frac || self.m[r] <= 0.0 {
                        continue;
                    }
                    if self.lp.pos[k + r] >= 0 || self.lp.value(k + r) > 0.0 {
                        continue;
                    }
                    let d = self.lp.d[r] / self.cs;
                    if !self.lp.at_upper[r] && d > 0.0 {
                        let t = (lim - z) / d * (1.0 + 1e-9) + 1e-12;
                        if t < inst.me[r] && self.opts & 4 != 0 {
                            extra.push((r as u32, OFF));
                        } else if self.opts & 128 != 0 && t < 0.5 * self.m[r] {
                            newcaps.push((r as u32, t));
                        }
                    }
                }
            }
        }
        let (mut lb_on, mut lb_off) = (z, z);
        // strong branching parameters: candidates probed per node, dual simplex iterations per probe, probes per
        // rail and direction after which its pseudo-cost stands in for a probe
        let (sb_cands, sb_iters, sb_rel) = (8usize, 25u64, 4u32);
        if self.opts & 65536 != 0 && cands.len() > 1 {
            // Reliability branching: the best candidates by the usual score are probed both ways (`probe`: a short
            // dual simplex from this node's basis) until a rail has sb_rel probes per direction, then scored by its
            // pseudo-costs; a weighted sum of the two gains picks the rail. A direction whose probe LP is solved to
            // optimality and cannot beat the incumbent (or is infeasible) is fixed the other way for this subtree
            // (the probe is a relaxation of that child). Solved probe values are the children's lower bounds.
            cands.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(Ordering::Equal));
            let node_basis = self.lp.basis.clone();
            let node_up = self.lp.at_upper.clone();
            let lim = self.prune_level();
            let mut best = (-1.0, usize::MAX, z, z);
            let yv: Vec<f64> = cands.iter().take(sb_cands).map(|&(_, r)| self.y_of(r).min(1.0)).collect();
            let mut best_y = 0.0;
            for (ci, &(_, r)) in cands.iter().take(sb_cands).enumerate() {
                let mut zz = [z; 2];
                let mut exact = [false; 2];
                let fr = [yv[ci].max(1e-6), (1.0 - yv[ci]).max(1e-6)];
                let reliable = self.pc_cnt[2 * r] >= sb_rel && self.pc_cnt[2 * r + 1] >= sb_rel;
                for d in 0..2 {
                    if reliable {
                        // pseudo-cost estimate from this rail's earlier probes: scores only
                        zz[d] = z + self.pc_sum[2 * r + d] / self.pc_cnt[2 * r + d] as f64 * fr[d];
                        continue;
                    }
                    let (val, ex) = self.probe(r, d == 1, &node_basis, &node_up, sb_iters, None);
                    zz[d] = val.max(z);
                    exact[d] = ex;
                    if val.is_finite() {
                        self.pc_sum[2 * r + d] += (val - z).max(0.0) / fr[d];
                        self.pc_cnt[2 * r + d] += 1;
                    }
                }
                let dead0 = exact[0] && zz[0] >= lim;
                let dead1 = exact[1] && zz[1] >= lim;
                if dead0 && dead1 {
                    self.lp.set_basis(&node_basis);
                    self.lp.at_upper.copy_from_slice(&node_up);
                    return NodeOut::Pruned;
                }
                if dead0 || dead1 {
                    extra.push((r as u32, if dead0 { ON } else { OFF }));
                    continue;
                }
                // weighted sum of the two gains (1/6 on the larger): the product rule tied at ~0 on near-tie instances
                // (the stress family, fixed fees deciding) and grew those trees 4-30x; the usual score breaks ties
                let (g0, g1) = ((zz[0] - z).max(0.0), (zz[1] - z).max(0.0));
                let score = (5.0 * g0.min(g1) + g0.max(g1)) / 6.0 + 1e-6 * cands[ci].0;
                if score > best.0 {
                    best = (score, r, if exact[1] { zz[1] } else { z }, if exact[0] { zz[0] } else { z });
                    best_y = yv[ci];
                }
            }
            if self.opts & VERIFY_DEAD != 0 && best.1 != usize::MAX && best.2 == z && best.3 == z {
                // The rail chosen has no solved probe here (its pseudo-costs scored it). A child its pseudo-costs
                // say cannot beat the incumbent is probed, stopping once the probe's bound reaches the prune level:
                // if it does (a probe is a relaxation of the child), that child is not created.
                let r = best.1;
                let yr = self.y_of(r).min(1.0);
                let share = [yr.max(1e-6), (1.0 - yr).max(1e-6)]; // [off, on], as in the scores above
                let predicted_dead = |d: usize| {
                    self.pc_cnt[2 * r + d] == 0 || z + self.pc_sum[2 * r + d] / self.pc_cnt[2 * r + d] as f64 * share[d] >= lim
                };
                let (dead_off, dead_on) = (predicted_dead(0), predicted_dead(1));
                if dead_on {
                    let (v, exact) = self.probe(r, true, &node_basis, &node_up, VERIFY_DEAD_ITERS, Some(lim));
                    if exact {
                        best.2 = v.max(z);
                    }
                }
                if dead_off {
                    let (v, exact) = self.probe(r, false, &node_basis, &node_up, VERIFY_DEAD_ITERS, Some(lim));
                    if exact {
                        best.3 = v.max(z);
                    }
                }
            }
            self.lp.set_basis(&node_basis);
            self.lp.at_upper.copy_from_slice(&node_up);
            if best.1 != usize::MAX {
                frac = best.1;
                lb_on = best.2;
                lb_off = best.3;
                on_first = best_y >= 0.5;
            } else if extra.iter().any(|&(e, _)| e as usize == frac) {
                // every probed candidate was fixed: branch on the first unfixed candidate, if any
                match cands.iter().find(|&&(_, r)| !extra.iter().any(|&(e, _)| e as usize == r)) {
                    Some(&(_, r)) => {
                        frac = r;
                        on_first = false; // (the LP holds the last probe's values now)
                    }
                    None => {
                        // re-solve this node with the fixes: one child carries them all, the other is empty
                        let (r, dir) = extra.pop().unwrap();
                        let r = r as usize;
                        return NodeOut::Branch { lb: z, rail: r, on_first: dir == ON, extra, caps: newcaps,
                                                 lb_on: if dir == ON { z } else { f64::INFINITY },
                                                 lb_off: if dir == OFF { z } else { f64::INFINITY } };
                    }
                }
            }
        }
        NodeOut::Branch { lb: z, rail: frac, on_first, extra, caps: newcaps, lb_on, lb_off }
    }
}

thread_local! {
    // The cancel flag of the bnb_solve_cancellable call running on this thread (null: none). Thread-local, so
    // concurrent calls from several threads stay independent; the sub-searches run on the same thread and see it.
    static CANCEL: std::cell::Cell<*const std::sync::atomic::AtomicI32> = std::cell::Cell::new(std::ptr::null());
}

fn cancelled() -> bool {
    CANCEL.with(|c| {
        let p = c.get();
        // SAFETY: the pointer is set only for the duration of bnb_solve_cancellable, whose caller keeps it alive.
        !p.is_null() && unsafe { (*p).load(std::sync::atomic::Ordering::Relaxed) } != 0
    }) || SUB_STOP.with(|c| {
        let p = c.get();
        // SAFETY: set only while a search thread runs the deferred core sub-searches; the flag outlives the thread.
        !p.is_null() && unsafe { (*p).load(std::sync::atomic::Ordering::Acquire) }
    })
}

/// How many of the root's core sub-searches a search thread has run (CORE_OVERLAP), process-wide: the tests read it.
static CORE_OVERLAP_RUNS: AtomicU64 = AtomicU64::new(0);

/// Option bit (a diagnostic for the tests, off in the planner): every basis inverse the LP updates instead of
/// refactoring (`prepare`'s Sherman-Morrison path) is checked against its basis; `bnb_inverse_checks` counts the
/// checks and the failures, process-wide.
const CHECK_INVERSE: u32 = 67108864;
static INVERSE_CHECKS: AtomicU64 = AtomicU64::new(0);
static INVERSE_CHECK_FAILURES: AtomicU64 = AtomicU64::new(0);
static INVERSE_CHECK_WORST: AtomicU64 = AtomicU64::new(0);

/// CHECK_INVERSE so far in this process: the checks, the failures (a relative residual above 1e-8, see
/// `count_inverse_check`) and the worst residual seen (`worst` is reset to 0 by the call).
#[no_mangle]
pub extern "C" fn bnb_inverse_checks(checks: *mut u64, failures: *mut u64, worst: *mut f64) {
    // SAFETY: the caller passes three valid slots (the tests' ctypes call).
    unsafe {
        *checks = INVERSE_CHECKS.load(AtomicOrdering::Relaxed);
        *failures = INVERSE_CHECK_FAILURES.load(AtomicOrdering::Relaxed);
        let bits = INVERSE_CHECK_WORST.swap(0, AtomicOrdering::Relaxed);
        *worst = if bits == u64::MAX { f64::NAN } else { f64::from_bits(bits) };
    }
}

#[no_mangle]
pub extern "C" fn bnb_core_overlap_runs() -> u64 {
    CORE_OVERLAP_RUNS.load(AtomicOrdering::Relaxed)
}

thread_local! {
    // A search thread running the root's deferred core sub-searches: the search's `finished` flag, so a sub-search
    // stops once the other thread has finished the tree (null otherwise).
    static SUB_STOP: std::cell::Cell<*const AtomicBool> = std::cell::Cell::new(std::ptr::null());
}

/// `bnb_solve`, stopped (status 2, "limit") at the next node once `*cancel` becomes non-zero: the planner races
/// this solver against HiGHS and cancels the loser. `cancel` must stay valid until the call returns.
#[no_mangle]
pub extern "C" fn bnb_solve_cancellable(
    n: i32, k: i32, from: *const i32, to: *const i32, f: *const f64, p: *const f64, me: *const f64, mm: *const f64,
    lo: *const f64, hi: *const f64, init_ub: f64, gap: f64, time_limit: f64, max_nodes: i64, opts: i32,
    out_x: *mut f64, out_y: *mut u8, out_info: *mut f64, cancel: *const i32,
) -> i32 {
    CANCEL.with(|c| c.set(cancel as *const std::sync::atomic::AtomicI32));
    let status = bnb_solve(n, k, from, to, f, p, me, mm, lo, hi, init_ub, gap, time_limit, max_nodes, opts, out_x,
                           out_y, out_info);
    CANCEL.with(|c| c.set(std::ptr::null()));
    status
}

#[no_mangle]
pub extern "C" fn bnb_solve(
    n: i32,
    k: i32,
    from: *const i32,
    to: *const i32,
    f: *const f64,
    p: *const f64,
    me: *const f64,
    mm: *const f64,
    lo: *const f64,
    hi: *const f64,
    init_ub: f64,
    gap: f64,
    time_limit: f64,
    max_nodes: i64,
    opts: i32,
    out_x: *mut f64,
    out_y: *mut u8,
    out_info: *mut f64, // [status, objective, bound, nodes, lp_iters, heur_found]
) -> i32 {
    let r = std::panic::catch_unwind(|| unsafe {
        let (n, k) = (n as usize, k as usize);
        let sl = |p: *const f64, len: usize| std::slice::from_raw_parts(p, len).to_vec();
        let from: Vec<usize> = std::slice::from_raw_parts(from, k).iter().map(|&v| v as usize).collect();
        let to: Vec<usize> = std::slice::from_raw_parts(to, k).iter().map(|&v| v as usize).collect();
        let (f, p, me, mm, lo, hi) = (sl(f, k), sl(p, k), sl(me, k), sl(mm, k), sl(lo, n), sl(hi, n));
        // non-finite input (e.g. an overflowed total): status -2, no answer (NaN compares false and was "optimal")
        if [&f, &p, &me, &lo, &hi].iter().any(|v| v.iter().any(|x| !x.is_finite())) || mm.iter().any(|x| x.is_nan()) {
            return -2;
        }
        let inst = build(n, k, from, to, f, p, me, mm, lo, hi, opts as u32);
        let res = solve(&inst, init_ub, gap, time_limit, max_nodes as u64, opts as u32);
        let xs = std::slice::from_raw_parts_mut(out_x, res.0.len());
        let ys = std::slice::from_raw_parts_mut(out_y, k);
        xs.copy_from_slice(&res.0);
        ys.copy_from_slice(&res.1);
        let info = std::slice::from_raw_parts_mut(out_info, 6);
        info.copy_from_slice(&res.2);
        info[0] as i32
    });
    r.unwrap_or(-1)
}

#[allow(clippy::too_many_arguments)]
fn build(n: usize, k: usize, from: Vec<usize>, to: Vec<usize>, f: Vec<f64>, p: Vec<f64>, me: Vec<f64>, mm: Vec<f64>,
         lo: Vec<f64>, hi: Vec<f64>, opts: u32) -> Inst {
    let mut cover = vec![-1i32; n];
    let mut cover_rhs = Vec::new();
    let mut nrows = n;
    if opts & 256 != 0 {
        for v in 0..n {
            if lo[v] > 1e-9 {
                // rails needed: fewest in-rails whose largest credits reach the deficit
                let mut caps: Vec<f64> = (0..k).filter(|&r| to[r] == v).map(|r| ((1.0 - p[r]) * mm[r] - f[r]).max(0.0)).collect();
                caps.sort_by(|a, b| b.partial_cmp(a).unwrap());
                let mut need: f64 = 1.0;
                if opts & 512 != 0 {
                    let mut acc = 0.0;
                    let mut cnt: f64 = 0.0;
                    for c in &caps {
                        acc += c;
                        cnt += 1.0;
                        if acc >= lo[v] * (1.0 - 1e-9) {
                            break;
                        }
                    }
                    need = cnt.max(1.0);
                }
                cover[v] = nrows as i32;
                cover_rhs.push(need);
                nrows += 1;
            }
        }
    }
    let mut ins = vec![Vec::new(); n];
    let mut outs = vec![Vec::new(); n];
    for r in 0..k {
        ins[to[r]].push(r);
        outs[from[r]].push(r);
    }
    Inst { n, k, from, to, f, p, me, mm, lo, hi, ins, outs, cover, cover_rhs, nrows }
}

/// A power of two (exact) for the LP's costs: the LP's dual tolerances are absolute (1e-9 on a reduced cost), and
/// amounts come normalised (~1e3) but fees do not; a fee 1e-10 of its amount fell below them and a plan 40% dearer
/// than the optimum was "proven". A first guess here (the cheapest rail into each deficit venue, about 2^10, never
/// down); `solve` then sizes it by the root relaxation's value (`pow2_for`).
fn cost_scale(inst: &Inst) -> f64 {
    let mut fm = 0.0;
    for v in 0..inst.n {
        if inst.lo[v] > 1e-9 {
            fm += inst.ins[v].iter().map(|&r| inst.f[r] + inst.p[r] * inst.lo[v]).fold(f64::INFINITY, f64::min);
        }
    }
    if !(fm > 0.0 && fm.is_finite()) {
        return 1.0;
    }
    pow2_for(fm)
}

/// The power of two (1 .. 2^40) bringing a fee of `z` to about 2^10 in the LP's costs.
fn pow2_for(z: f64) -> f64 {
    2f64.powi((1024.0 / z).log2().round().clamp(0.0, 40.0) as i32)
}

fn solve(inst: &Inst, init_ub: f64, gap: f64, time_limit: f64, max_nodes: u64, opts: u32) -> (Vec<f64>, Vec<u8>, [f64; 6]) {
    let start = Instant::now();
    let k = inst.k;
    let mut s = Solver {
        inst,
        lp: Lp::new(inst.nrows, 2 * k),
        st: vec![FREE; k],
        m: vec![0.0; k],
        cap: vec![f64::INFINITY; k],
        hi: inst.hi.clone(),
        cuts: Vec::new(),
        has_cut: vec![false; 2 * k],
        cutcoef: vec![Vec::new(); k],
        defer_cuts: opts & DEFER_CUTS != 0 && opts & 1024 != 0,
        ub_val: init_ub,
        best_x: vec![0.0; k],
        best_y: vec![0; k],
        gap,
        nodes: 0,
        lp_fail: false,
        heur_found: 0,
        opts,
        sep_rounds: if opts & 2048 != 0 { 3 } else { 0 },
        max_pool: if opts & 4096 != 0 { 2 * inst.n } else { 6 * inst.n },
        pc_sum: vec![0.0; 2 * k],
        pc_cnt: vec![0; 2 * k],
        loaded: Vec::new(),
        loaded_cs: f64::NAN,
        node_cst: 0.0,
        cs: cost_scale(inst),
        deadline: (start, time_limit),
        core_defer: false,
        deferred_core: None,
    };
    s.lp.check_inverse = opts & CHECK_INVERSE != 0;
    let mut heap: BinaryHeap<Node> = BinaryHeap::new();
    let slack: Vec<u32> = (2 * k..2 * k + inst.nrows).map(|j| j as u32).collect();
    let root = Arc::new(Delta { parent: None, fixes: Vec::new(), caps: Vec::new() });
    // Size the LP's costs by the root relaxation's value (a lower bound on every plan's fee), twice: a value from
    // costs far below the tolerances is itself rough. Only the scale changes; bounds stay in fee units.
    for _ in 0..2 {
        s.apply(&root);
        if !s.node_bounds() {
            break;
        }
        let cst = s.load_lp();
        s.lp.set_basis(&slack.iter().map(|&j| j as usize).collect::<Vec<_>>());
        if !matches!(s.lp.solve(50_000), LpStatus::Optimal) {
            break;
        }
        let z = s.lp.objective() / s.cs + cst;
        if !(z > 0.0 && z.is_finite()) || pow2_for(z) == s.cs {
            break;
        }
        s.cs = pow2_for(z);
    }
    if opts & PARALLEL != 0 && opts & 16 == 0 {
        s.core_defer = opts & CORE_OVERLAP != 0 && opts & CORE_AFTER_CUTS != 0;
        return solve_parallel(s, root, slack, init_ub, max_nodes);
    }
    heap.push(Node { lb: f64::NEG_INFINITY, delta: root, basis: slack });
    let mut status = 0.0;
    'outer: while let Some(node) = heap.pop() {
        if node.lb >= s.prune_level() {
            continue;
        }
        let mut delta = node.delta;
        let mut basis = node.basis;
        let mut lb = node.lb;
        loop {
            if s.nodes >= max_nodes || start.elapsed().as_secs_f64() > time_limit || cancelled() {
                status = 2.0;
                heap.push(Node { lb, delta, basis });
                break 'outer;
            }
            let every = if s.opts & 16384 != 0 { 10 } else { 100 };
            let heur = s.nodes == 0 || (s.opts & 8 != 0 && s.nodes % every == 0);
            let out = s.process(&delta, &basis, heur && s.opts & 16 == 0);
            if s.opts & 16 != 0 {
                let mut xs = vec![0.0; 3 * k];
                for r in 0..k {
                    xs[r] = s.lp.value(r);
                    xs[k + r] = s.m[r];
                    xs[2 * k + r] = s.lp.value(k + r);
                }
                let info = [4.0, s.lp.objective(), 0.0, 1.0, s.lp.iters as f64, 0.0];
                return (xs, vec![0; k], info);
            }
            match out {
                NodeOut::Pruned => break,
                NodeOut::Branch { lb: z, rail, on_first, extra, caps, lb_on, lb_off } => {
                    let nb: Vec<u32> = s.lp.basis.iter().map(|&j| j as u32).collect();
                    let (a, b) = children(&delta, rail, on_first, extra, caps);
                    // a child's lower bound: the parent's, or its own LP value when strong branching solved it
                    let (lb_a, lb_b) = if on_first { (lb_on, lb_off) } else { (lb_off, lb_on) };
                    if lb_b < s.prune_level() {
                        heap.push(Node { lb: lb_b.max(z), delta: b, basis: nb.clone() });
                    }
                    if lb_a >= s.prune_level() {
                        break;
                    }
                    delta = a;
                    basis = nb;
                    lb = lb_a.max(z);
                }
            }
        }
    }
    let (status, global_lb) = finish(status == 2.0, s.ub_val, &heap, s.lp_fail, &s.best_y, init_ub);
    let info = [status, s.ub_val, global_lb, s.nodes as f64, s.lp.iters as f64, s.heur_found as f64];
    (s.best_x, s.best_y, info)
}

/// The search's status and bound once it stopped: 0 proven (bound = the incumbent), 1 infeasible, 2 a limit (bound =
/// the lowest open node, or the incumbent), 3 an LP failed (nothing it claims is trusted). An incumbent passed in
/// (`init_ub`) without a plan found here is a limit: we do not hold that plan.
fn finish(limit: bool, ub: f64, open: &BinaryHeap<Node>, lp_fail: bool, best_y: &[u8], init_ub: f64) -> (f64, f64) {
    let (mut status, global_lb) = if limit {
        (2.0, open.iter().map(|nd| nd.lb).fold(f64::INFINITY, f64::min).min(ub))
    } else {
        (if ub == f64::INFINITY { 1.0 } else { 0.0 }, ub)
    };
    if lp_fail {
        status = 3.0;
    }
    if status == 0.0 && best_y.iter().all(|&y| y == 0) && init_ub < f64::INFINITY && ub == init_ub {
        status = 2.0;
    }
    (status, global_lb)
}

/// The two children of a node branched on `rail`: the one to search first (`rail` fixed on if `on_first`, else off)
/// and the other, both under the node's own extra fixes and bound caps (one shared delta).
fn children(delta: &Arc<Delta>, rail: usize, on_first: bool, extra: Vec<(u32, u8)>, caps: Vec<(u32, f64)>) -> (Arc<Delta>, Arc<Delta>) {
    let parent = if extra.is_empty() && caps.is_empty() {
        delta.clone()
    } else {
        Arc::new(Delta { parent: Some(delta.clone()), fixes: extra, caps })
    };
    let child = |state: u8| Arc::new(Delta { parent: Some(parent.clone()), fixes: vec![(rail as u32, state)], caps: Vec::new() });
    if on_first { (child(ON), child(OFF)) } else { (child(OFF), child(ON)) }
}

/// Option bit: search the tree with two threads (`solve_parallel`).
const PARALLEL: u32 = 131072;
const THREADS: usize = 2;

/// The open nodes and who is working, shared by the threads of `solve_parallel`.
struct Pool {
    heap: BinaryHeap<Node>,
    busy: usize, // threads plunging from a node they took
    done: bool,  // the search is over (proven, or a thread hit a limit)
}

struct Shared {
    pool: Mutex<Pool>,
    wake: Condvar,
    halt: AtomicBool, // a limit was hit (time, nodes, cancel) or a thread panicked: every thread stops
    ub: AtomicU64,    // the best incumbent's value so far, as f64 bits (only ever lowered)
    nodes: AtomicU64,
    cancel: usize, // the caller's cancel flag (a pointer; 0: none), installed in each thread's CANCEL
    finished: AtomicBool, // set with pool.done: stops a deferred core sub-search still running (SUB_STOP)
}

impl Shared {
    fn ub(&self) -> f64 {
        f64::from_bits(self.ub.load(AtomicOrdering::Acquire))
    }

    fn lower_ub(&self, z: f64) {
        let mut cur = self.ub.load(AtomicOrdering::Acquire);
        while z < f64::from_bits(cur) {
            match self.ub.compare_exchange_weak(cur, z.to_bits(), AtomicOrdering::AcqRel, AtomicOrdering::Acquire) {
                Ok(_) => break,
                Err(seen) => cur = seen,
            }
        }
    }

    /// Stop every thread (a limit, or a panic in one of them) and wake the waiting ones.
    fn stop(&self) {
        self.halt.store(true, AtomicOrdering::Release);
        self.finished.store(true, AtomicOrdering::Release);
        if let Ok(mut pool) = self.pool.lock() {
            pool.done = true;
        }
        self.wake.notify_all();
    }
}

/// Stops the search if its thread unwinds (a panic): the other thread must not wait for nodes forever.
struct StopOnPanic<'s>(&'s Shared);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.stop();
        }
    }
}

/// The same best-first search as `solve`, by THREADS threads sharing the open nodes and the incumbent's value.
/// The root is processed first on this thread (its heuristics and probes run once); each thread then works on a
/// copy of that state with its own LP, takes the best open node, plunges, and puts the other child back in the
/// shared heap. A thread that lowers the incumbent publishes its value; each thread prunes against the best
/// published value before every node. Proven when the heap is empty and no thread is plunging. The plan returned
/// is the one held by the thread that found the best value.
fn solve_parallel(mut s: Solver, root: Arc<Delta>, slack: Vec<u32>, init_ub: f64, max_nodes: u64) -> (Vec<f64>, Vec<u8>, [f64; 6]) {
    let (start, time_limit) = s.deadline;
    let mut heap = BinaryHeap::new();
    if let NodeOut::Branch { lb: z, rail, on_first: _, extra, caps, lb_on, lb_off } = s.process(&root, &slack, true) {
        let nb: Vec<u32> = s.lp.basis.iter().map(|&j| j as u32).collect();
        let (on, off) = children(&root, rail, true, extra, caps);
        for (delta, lb) in [(on, lb_on), (off, lb_off)] {
            if lb < s.prune_level() {
                heap.push(Node { lb: lb.max(z), delta, basis: nb.clone() });
            }
        }
    }
    let shared = Shared {
        pool: Mutex::new(Pool { heap, busy: 0, done: false }),
        wake: Condvar::new(),
        halt: AtomicBool::new(false),
        ub: AtomicU64::new(s.ub_val.to_bits()),
        nodes: AtomicU64::new(s.nodes),
        cancel: CANCEL.with(|c| c.get() as usize),
        finished: AtomicBool::new(false),
    };
    let root_iters = s.lp.iters;
    let root_heur = s.heur_found;
    // the recorded core sub-searches (CORE_OVERLAP) go to the first thread only
    let snap = s.deferred_core.take();
    s.core_defer = false;
    let forks: Vec<(Solver, Option<CoreSnap>)> = (0..THREADS).map(|i| (s.clone(), if i == 0 { snap.clone() } else { None })).collect();
    let results: Vec<(Solver, f64, bool)> = std::thread::scope(|scope| {
        let handles: Vec<_> = forks
            .into_iter()
            .map(|(w, snap)| {
                let sh = &shared;
                scope.spawn(move || search_worker(w, snap, sh, start, time_limit, max_nodes))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    });
    let pool = shared.pool.into_inner().unwrap_or_else(|e| e.into_inner());
    let limit = results.iter().any(|r| r.2);
    let lp_fail = results.iter().any(|r| r.0.lp_fail); // each thread's solver started as a copy of the root's
    // the thread holding the best plan: its own incumbent (not a value it only heard of) is the lowest
    let best = results.iter().min_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(Ordering::Equal)).unwrap();
    let ub = best.1;
    let (status, global_lb) = finish(limit, ub, &pool.heap, lp_fail, &best.0.best_y, init_ub);
    let iters = root_iters + results.iter().map(|r| r.0.lp.iters - root_iters).sum::<u64>();
    let heur = root_heur + results.iter().map(|r| r.0.heur_found - root_heur).sum::<u64>();
    let nodes = shared.nodes.load(AtomicOrdering::Acquire);
    let info = [status, ub, global_lb, nodes as f64, iters as f64, heur as f64];
    (best.0.best_x.clone(), best.0.best_y.clone(), info)
}

/// One thread of `solve_parallel`: returns its solver, the value of the plan it holds, and whether it hit a limit.
fn search_worker<'a>(mut s: Solver<'a>, snap: Option<CoreSnap>, sh: &Shared, start: Instant, time_limit: f64, max_nodes: u64) -> (Solver<'a>, f64, bool) {
    let _guard = StopOnPanic(sh);
    CANCEL.with(|c| c.set(sh.cancel as *const std::sync::atomic::AtomicI32));
    let mut own = s.ub_val; // the value of the plan in s.best_x / s.best_y
    if let Some(snap) = snap {
        // the root's recorded core sub-searches first, while the other thread starts on the tree; a sub-search stops
        // at its next node once that thread has finished the tree (SUB_STOP) or the search is stopped
        SUB_STOP.with(|c| c.set(&sh.finished as *const AtomicBool));
        let stop = || sh.halt.load(AtomicOrdering::Acquire) || start.elapsed().as_secs_f64() > time_limit || cancelled();
        if let Some(v) = s.run_core_snap(&snap, || sh.ub(), stop) {
            own = v;
            sh.lower_ub(own);
        }
        SUB_STOP.with(|c| c.set(std::ptr::null()));
    }
    let mut hit_limit = false;
    'outer: loop {
        let node = {
            let mut pool = sh.pool.lock().unwrap();
            loop {
                if pool.done {
                    break 'outer;
                }
                s.ub_val = s.ub_val.min(sh.ub());
                match pool.heap.pop() {
                    Some(nd) if nd.lb >= s.prune_level() => continue,
                    Some(nd) => {
                        pool.busy += 1;
                        break nd;
                    }
                    None if pool.busy == 0 => {
                        pool.done = true;
                        sh.finished.store(true, AtomicOrdering::Release);
                        sh.wake.notify_all();
                        break 'outer;
                    }
                    None => pool = sh.wake.wait(pool).unwrap(),
                }
            }
        };
        let (mut delta, mut basis, mut lb) = (node.delta, node.basis, node.lb);
        loop {
            s.ub_val = s.ub_val.min(sh.ub());
            // take a node out of the budget first: two threads never process more than `max_nodes` together
            let over = sh.nodes.fetch_add(1, AtomicOrdering::AcqRel) >= max_nodes;
            if over || sh.halt.load(AtomicOrdering::Acquire) || start.elapsed().as_secs_f64() > time_limit || cancelled() {
                sh.nodes.fetch_sub(1, AtomicOrdering::AcqRel);
                hit_limit = true;
                let mut pool = sh.pool.lock().unwrap();
                pool.heap.push(Node { lb, delta, basis });
                pool.busy -= 1;
                pool.done = true;
                sh.finished.store(true, AtomicOrdering::Release);
                sh.halt.store(true, AtomicOrdering::Release);
                sh.wake.notify_all();
                break 'outer;
            }
            let every = if s.opts & 16384 != 0 { 10 } else { 100 };
            let heur = s.opts & 8 != 0 && s.nodes % every == 0;
            let before = s.ub_val;
            let out = s.process(&delta, &basis, heur);
            if s.ub_val < before {
                own = s.ub_val;
                sh.lower_ub(own);
            }
            match out {
                NodeOut::Pruned => break,
                NodeOut::Branch { lb: z, rail, on_first, extra, caps, lb_on, lb_off } => {
                    let nb: Vec<u32> = s.lp.basis.iter().map(|&j| j as u32).collect();
                    let (a, b) = children(&delta, rail, on_first, extra, caps);
                    let (lb_a, lb_b) = if on_first { (lb_on, lb_off) } else { (lb_off, lb_on) };
                    if lb_b < s.prune_level() {
                        let mut pool = sh.pool.lock().unwrap();
                        pool.heap.push(Node { lb: lb_b.max(z), delta: b, basis: nb.clone() });
                        sh.wake.notify_one();
                    }
                    if lb_a >= s.prune_level() {
                        break;
                    }
                    delta = a;
                    basis = nb;
                    lb = lb_a.max(z);
                }
            }
        }
        let mut pool = sh.pool.lock().unwrap();
        pool.busy -= 1;
        if pool.busy == 0 && pool.heap.is_empty() {
            pool.done = true;
            sh.finished.store(true, AtomicOrdering::Release);
            sh.wake.notify_all();
        }
    }
    (s, own, hit_limit)
}
