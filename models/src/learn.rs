//! Fit a static table's token vectors to the teacher's sentence embeddings
//! (as Tokenlearn does): a text's static vector is the sum of its tokens'
//! vectors, exactly as the scorer sums them, and training moves the token
//! vectors so that this sum points where the teacher's embedding of the
//! same text points.
//!
//! Distillation alone (`distill`) embeds each token on its own, so a
//! token's vector says what the token means in isolation, and SIF guesses
//! how much it counts; here both are learned from whole sentences. The
//! scorer's code does not change, only the table's numbers.
//!
//! The steps:
//!
//! 1. The target space: the teacher's embeddings are projected onto the
//!    `dims` directions that keep most of their energy (uncentred PCA, so
//!    that cosines, which the score is, survive the projection).
//! 2. A start: the given table (the distilled one), mapped into that space
//!    by the linear map that best carries its sentence vectors onto the
//!    targets (least squares).
//! 3. Adam on `1 - cos(static, target)` over mini-batches of texts, only
//!    the rows of the tokens in a batch updated (sparse), with an L2 pull
//!    toward the start so that a token seen in a sentence or two does not
//!    drift far on their account.
//!
//! A share of the texts (whole blocks of consecutive ones, so that a
//! synset's definition and examples stay on one side) is held out and
//! reported, so that settings can be chosen without the evaluation pairs.

use nalgebra::{DMatrix, SymmetricEigen};

#[derive(Debug, Clone)]
pub struct LearnOptions {
    pub epochs: usize,
    /// Adam's step size, for vectors scaled so that a typical text's
    /// static vector has length 1.
    pub lr: f32,
    /// Strength of the pull toward the start, per update of a row.
    pub l2: f32,
    /// Texts a mini-batch.
    pub batch: usize,
    /// Seed of the order the texts are visited in.
    pub seed: u64,
    /// One block in `holdout_every` of 64 consecutive texts is held out.
    pub holdout_every: usize,
    /// Subtract the training embeddings' mean before projecting, so the
    /// static vectors learn the teacher's embeddings less what all texts
    /// share (centred PCA); otherwise the projection is uncentred.
    pub centre: bool,
}

impl Default for LearnOptions {
    fn default() -> Self {
        Self {
            epochs: 8,
            lr: 3e-3,
            l2: 1e-3,
            batch: 128,
            seed: 17,
            holdout_every: 20,
            centre: false,
        }
    }
}

/// Texts per held-out block.
const BLOCK: usize = 64;

/// Whether text `i` is held out.
pub fn held_out(i: usize, every: usize) -> bool {
    every > 0 && (i / BLOCK).is_multiple_of(every)
}

/// The training problem: a start table, texts as token ids, teacher
/// embeddings.
pub struct Problem<'a> {
    /// Token vectors of the start table, `tokens × dims`, weights folded in.
    pub start: &'a [f32],
    pub dims: usize,
    /// Each text's token ids (repeats count), as the scorer tokenises it.
    pub texts: &'a [Vec<u32>],
    /// The teacher's unit embeddings, `texts × teacher_dims`.
    pub teacher: &'a [f32],
    pub teacher_dims: usize,
}

/// What one epoch came to on the held-out texts.
#[derive(Debug, Clone, Copy)]
pub struct EpochReport {
    pub epoch: usize,
    /// Mean cosine of the static vector with its target, held out.
    pub holdout_cosine: f64,
    /// The same on the training texts.
    pub train_cosine: f64,
}

/// The learned table's token vectors, `tokens × dims`.
pub struct Learned {
    pub vectors: Vec<f32>,
    /// Share of the teacher embeddings' energy the target space keeps.
    pub energy_kept: f64,
    /// Mean held-out cosine of the start, mapped into the target space.
    pub start_cosine: f64,
}

/// Learn; `on_epoch` sees each epoch's report and vectors (epoch 0 is the
/// mapped start).
pub fn learn(
    problem: &Problem<'_>,
    options: &LearnOptions,
    mut on_epoch: impl FnMut(&EpochReport, &[f32]),
) -> Learned {
    let dims = problem.dims;
    let n = problem.texts.len();
    let train: Vec<usize> = (0..n)
        .filter(|i| !held_out(*i, options.holdout_every) && !problem.texts[*i].is_empty())
        .collect();
    let holdout: Vec<usize> = (0..n)
        .filter(|i| held_out(*i, options.holdout_every) && !problem.texts[*i].is_empty())
        .collect();

    // 1. The target space, from the training texts only.
    let space = TargetSpace::fit(
        problem.teacher,
        problem.teacher_dims,
        &train,
        dims,
        options.centre,
    );
    let energy_kept = space.energy_kept;
    let targets = space.project(problem.teacher);

    // 2. The start, mapped.
    let map = linear_map(problem, &targets, &train);
    let mut vectors = apply_map(problem.start, dims, &map);
    normalise_scale(&mut vectors, problem.texts, &train, dims);
    let start = vectors.clone();
    let report = |epoch: usize, v: &[f32]| EpochReport {
        epoch,
        holdout_cosine: mean_cosine(v, problem.texts, &targets, dims, &holdout),
        train_cosine: mean_cosine(v, problem.texts, &targets, dims, &train),
    };
    let first = report(0, &vectors);
    on_epoch(&first, &vectors);

    // 3. Adam.
    let mut adam = SparseAdam::new(vectors.len(), options.lr);
    let mut order = train.clone();
    let mut rng = SplitMix(options.seed);
    let mut grad = vec![0.0f32; vectors.len()];
    let mut touched = Vec::new();
    let mut marked = vec![false; vectors.len() / dims.max(1)];
    let mut sum = vec![0.0f32; dims];
    for epoch in 1..=options.epochs {
        shuffle(&mut order, &mut rng);
        for batch in order.chunks(options.batch.max(1)) {
            let scale = 1.0 / batch.len() as f32;
            for &i in batch {
                let ids = &problem.texts[i];
                sentence(&vectors, ids, dims, &mut sum);
                let y = &targets[i * dims..(i + 1) * dims];
                let ds = cosine_gradient(&sum, y);
                for &id in ids {
                    let row = id as usize;
                    if !marked[row] {
                        marked[row] = true;
                        touched.push(row);
                    }
                    for (g, d) in grad[row * dims..(row + 1) * dims].iter_mut().zip(&ds) {
                        *g += d * scale;
                    }
                }
            }
            adam.tick();
            for &row in &touched {
                let span = row * dims..(row + 1) * dims;
                for c in span.clone() {
                    grad[c] += options.l2 * (vectors[c] - start[c]);
                }
                adam.step(&mut vectors[span.clone()], &grad[span.clone()], span.start);
                grad[span].fill(0.0);
                marked[row] = false;
            }
            touched.clear();
        }
        on_epoch(&report(epoch, &vectors), &vectors);
    }
    Learned {
        vectors,
        energy_kept,
        start_cosine: first.holdout_cosine,
    }
}

/// The static vector of a text: the sum of its tokens' rows.
fn sentence(vectors: &[f32], ids: &[u32], dims: usize, sum: &mut [f32]) {
    sum.fill(0.0);
    for &id in ids {
        let row = &vectors[id as usize * dims..(id as usize + 1) * dims];
        for (s, v) in sum.iter_mut().zip(row) {
            *s += v;
        }
    }
}

/// d(1 - cos(s, y))/ds = -(ŷ - cos·ŝ)/|s|.
fn cosine_gradient(s: &[f32], y: &[f32]) -> Vec<f32> {
    let ns = s.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    let ny = y.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    let cos = s.iter().zip(y).map(|(a, b)| a * b).sum::<f32>() / (ns * ny);
    s.iter()
        .zip(y)
        .map(|(a, b)| -(b / ny - cos * a / ns) / ns)
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x * y)).sum();
    let na: f64 = a.iter().map(|x| f64::from(x * x)).sum();
    let nb: f64 = b.iter().map(|x| f64::from(x * x)).sum();
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot / (na.sqrt() * nb.sqrt())
}

fn mean_cosine(
    vectors: &[f32],
    texts: &[Vec<u32>],
    targets: &[f32],
    dims: usize,
    which: &[usize],
) -> f64 {
    let mut sum = vec![0.0; dims];
    let total: f64 = which
        .iter()
        .map(|&i| {
            sentence(vectors, &texts[i], dims, &mut sum);
            cosine(&sum, &targets[i * dims..(i + 1) * dims])
        })
        .sum();
    total / which.len().max(1) as f64
}

/// Where `learn` sends the teacher's embeddings: less a mean (zero unless
/// centred), onto the `dims` directions that keep most of the training
/// texts' energy.
pub struct TargetSpace {
    /// teacher_dims × dims.
    pub basis: DMatrix<f64>,
    pub mean: Vec<f32>,
    /// Share of the (centred) energy the directions keep.
    pub energy_kept: f64,
}

impl TargetSpace {
    /// Fit to the rows `train` of `teacher` (`teacher_dims` wide).
    pub fn fit(
        teacher: &[f32],
        teacher_dims: usize,
        train: &[usize],
        dims: usize,
        centre: bool,
    ) -> Self {
        let td = teacher_dims;
        let mut mean = vec![0.0f32; td];
        if centre {
            let mut sum = vec![0.0f64; td];
            for &i in train {
                for (m, x) in sum.iter_mut().zip(&teacher[i * td..(i + 1) * td]) {
                    *m += f64::from(*x);
                }
            }
            let n = train.len().max(1) as f64;
            mean = sum.iter().map(|m| (m / n) as f32).collect();
        }
        let rows =
            DMatrix::<f32>::from_fn(train.len(), td, |r, c| teacher[train[r] * td + c] - mean[c]);
        let moment = (rows.transpose() * &rows).map(f64::from);
        let eigen = SymmetricEigen::new(moment);
        let mut order: Vec<usize> = (0..td).collect();
        order.sort_by(|a, b| eigen.eigenvalues[*b].total_cmp(&eigen.eigenvalues[*a]));
        let dims = dims.min(td);
        let total: f64 = eigen.eigenvalues.iter().sum();
        let kept: f64 = order[..dims].iter().map(|i| eigen.eigenvalues[*i]).sum();
        let basis = DMatrix::from_fn(td, dims, |r, c| eigen.eigenvectors[(r, order[c])]);
        Self {
            basis,
            mean,
            energy_kept: kept / total,
        }
    }

    /// Embeddings (rows, teacher_dims wide) in the space, row by row.
    pub fn project(&self, teacher: &[f32]) -> Vec<f32> {
        let td = self.mean.len();
        let all = DMatrix::<f32>::from_fn(teacher.len() / td, td, |r, c| {
            teacher[r * td + c] - self.mean[c]
        });
        row_major(&(all * self.basis.map(|x| x as f32)))
    }
}

/// A matrix's entries row by row.
fn row_major(m: &DMatrix<f32>) -> Vec<f32> {
    m.transpose().as_slice().to_vec()
}

/// The dims × dims map that best carries the start's unit sentence vectors
/// onto the unit targets (ridge least squares).
fn linear_map(problem: &Problem<'_>, targets: &[f32], train: &[usize]) -> DMatrix<f64> {
    let dims = problem.dims;
    let mut s = DMatrix::<f32>::zeros(train.len(), dims);
    let mut y = DMatrix::<f32>::zeros(train.len(), dims);
    let mut sum = vec![0.0f32; dims];
    for (r, &i) in train.iter().enumerate() {
        sentence(problem.start, &problem.texts[i], dims, &mut sum);
        let target = &targets[i * dims..(i + 1) * dims];
        let (ns, ny) = (norm(&sum).max(1e-12), norm(target).max(1e-12));
        for c in 0..dims {
            s[(r, c)] = sum[c] / ns;
            y[(r, c)] = target[c] / ny;
        }
    }
    let mut sts = (s.transpose() * &s).map(f64::from);
    let sty = (s.transpose() * &y).map(f64::from);
    let ridge = 1e-6 * sts.trace() / dims as f64;
    for d in 0..dims {
        sts[(d, d)] += ridge;
    }
    sts.cholesky()
        .map(|c| c.solve(&sty))
        .unwrap_or_else(|| DMatrix::identity(dims, dims))
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

fn apply_map(start: &[f32], dims: usize, map: &DMatrix<f64>) -> Vec<f32> {
    let rows = DMatrix::<f32>::from_row_slice(start.len() / dims, dims, start);
    row_major(&(rows * map.map(|x| x as f32)))
}

/// Scale all vectors so the median training text's vector has length 1,
/// which makes Adam's step size mean the same for any start table.
fn normalise_scale(vectors: &mut [f32], texts: &[Vec<u32>], train: &[usize], dims: usize) {
    let mut sum = vec![0.0; dims];
    let mut norms: Vec<f32> = train
        .iter()
        .step_by((train.len() / 2000).max(1))
        .map(|&i| {
            sentence(vectors, &texts[i], dims, &mut sum);
            sum.iter().map(|x| x * x).sum::<f32>().sqrt()
        })
        .filter(|n| *n > 0.0)
        .collect();
    if norms.is_empty() {
        return;
    }
    norms.sort_by(f32::total_cmp);
    let median = norms[norms.len() / 2];
    vectors.iter_mut().for_each(|v| *v /= median);
}

/// Adam whose moments are updated only for the rows given (the tokens of
/// a batch), with the global step's bias correction, as SparseAdam does.
struct SparseAdam {
    m: Vec<f32>,
    v: Vec<f32>,
    lr: f32,
    step: i32,
}

impl SparseAdam {
    const B1: f32 = 0.9;
    const B2: f32 = 0.999;
    const EPS: f32 = 1e-8;

    fn new(len: usize, lr: f32) -> Self {
        Self {
            m: vec![0.0; len],
            v: vec![0.0; len],
            lr,
            step: 0,
        }
    }

    fn tick(&mut self) {
        self.step += 1;
    }

    /// Update `params` (at offset `at` in the whole) by `grad`.
    fn step(&mut self, params: &mut [f32], grad: &[f32], at: usize) {
        let c1 = 1.0 - Self::B1.powi(self.step);
        let c2 = 1.0 - Self::B2.powi(self.step);
        let m = &mut self.m[at..at + params.len()];
        let v = &mut self.v[at..at + params.len()];
        for (((p, g), m), v) in params.iter_mut().zip(grad).zip(m).zip(v) {
            *m = Self::B1 * *m + (1.0 - Self::B1) * g;
            *v = Self::B2 * *v + (1.0 - Self::B2) * g * g;
            *p -= self.lr * (*m / c1) / ((*v / c2).sqrt() + Self::EPS);
        }
    }
}

/// A small deterministic generator for the visiting order.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn shuffle(items: &mut [usize], rng: &mut SplitMix) {
    for i in (1..items.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// Quantise learned vectors to the table's int8 rows with a per-token
/// scale (the largest component maps to ±127).
pub fn quantise(vectors: &[f32], dims: usize) -> (Vec<f32>, Vec<i8>) {
    let mut scales = Vec::with_capacity(vectors.len() / dims.max(1));
    let mut out = Vec::with_capacity(vectors.len());
    for row in vectors.chunks_exact(dims) {
        let max = row.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let step = if max > 0.0 { max / 127.0 } else { 0.0 };
        scales.push(step);
        out.extend(row.iter().map(|x| {
            if step == 0.0 {
                0
            } else {
                (x / step).round().clamp(-127.0, 127.0) as i8
            }
        }));
    }
    (scales, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy world: 6 tokens in 4 dimensions whose true vectors are known;
    /// the teacher embeds a text as the unit sum of its true vectors. The
    /// start is the truth scrambled; learning must bring the texts' static
    /// vectors close to the teacher's.
    #[test]
    fn learning_recovers_vectors_a_teacher_sums() {
        let dims = 4;
        let truth: Vec<f32> = vec![
            1.0, 0.0, 0.0, 0.0, //
            0.0, 1.0, 0.0, 0.0, //
            0.0, 0.0, 1.0, 0.0, //
            0.0, 0.0, 0.0, 1.0, //
            0.7, 0.7, 0.0, 0.0, //
            0.0, 0.5, 0.5, 0.5, //
        ];
        let start: Vec<f32> = truth
            .chunks(dims)
            .enumerate()
            .flat_map(|(t, row)| {
                row.iter()
                    .enumerate()
                    .map(move |(c, x)| x + 0.6 * (((t * 7 + c * 3) % 5) as f32 - 2.0))
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut rng = SplitMix(3);
        let texts: Vec<Vec<u32>> = (0..3000)
            .map(|_| (0..3).map(|_| (rng.next() % 6) as u32).collect())
            .collect();
        let teacher: Vec<f32> = texts
            .iter()
            .flat_map(|ids| {
                let mut s = vec![0.0f32; dims];
                sentence(&truth, ids, dims, &mut s);
                let n = s.iter().map(|x| x * x).sum::<f32>().sqrt();
                s.into_iter().map(move |x| x / n)
            })
            .collect();
        let problem = Problem {
            start: &start,
            dims,
            texts: &texts,
            teacher: &teacher,
            teacher_dims: dims,
        };
        let options = LearnOptions {
            epochs: 20,
            lr: 0.02,
            l2: 0.0,
            batch: 32,
            ..LearnOptions::default()
        };
        let mut reports = Vec::new();
        let learned = learn(&problem, &options, |r, _| reports.push(*r));
        let (first, last) = (reports[0], *reports.last().unwrap());
        assert!((learned.energy_kept - 1.0).abs() < 1e-9);
        assert!(
            last.holdout_cosine > 0.995 && last.holdout_cosine > first.holdout_cosine,
            "{first:?} -> {last:?}"
        );
    }

    #[test]
    fn quantising_keeps_each_row_to_within_half_a_step() {
        let v = [0.5, -1.27, 0.01, 0.0, 0.0, 0.0];
        let (scales, q) = quantise(&v, 3);
        assert_eq!(q[..3], [50, -127, 1]);
        assert_eq!((scales[1], &q[3..]), (0.0, &[0i8, 0, 0][..]));
        for (x, q) in v[..3].iter().zip(&q) {
            assert!((x - scales[0] * f32::from(*q)).abs() <= scales[0] / 2.0);
        }
    }

    #[test]
    fn held_out_texts_come_in_whole_blocks() {
        assert!((0..64).all(|i| held_out(i, 20)));
        assert!(!held_out(64, 20) && held_out(20 * 64, 20));
        assert!(!held_out(0, 0), "0 holds nothing out");
    }
}
