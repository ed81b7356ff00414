// neural3d: vectorised CPU compositing, lanes = rays.
//
// This header is included several times by composite_cpu.cpp, each time inside its own namespace
// and under its own `#pragma GCC target` (baseline x86-64, AVX2+FMA, AVX-512), with NEURAL3D_W
// (lanes) defined. It uses GCC/Clang vector extensions only, so one source compiles for every
// ISA; composite_cpu.cpp picks the best compiled variant at run time from the CPU's features.
//
// A block of W rays is processed together: tiles of W rays x W samples are loaded with W vector
// loads (one per ray, contiguous) and transposed in registers (log2(W) rounds of interleaving
// shuffles; on AVX2 the cross-lane round is folded into 128-bit loads and stores), so each vector
// then holds one sample of W rays and the sequential scan along the ray runs on W rays at once.
// Results (weights, gradients) are transposed back the same way (load_rows / store_rows).
// Ragged tiles (ray ends, packed rays of different lengths, the last partial block of rays) are
// staged through a zero-padded buffer; padding has zero density and contributes nothing.
//
// Memory: the next block's inputs are prefetched into L2 while a block runs, and the backward
// writes its gradients with streaming (non-temporal) stores (AVX-512: whole 64-byte vectors;
// AVX2: the 16-byte row halves of the tile transpose, when every row is 16-byte aligned): the
// gradients are written once and not read again here, so each line's read-for-ownership would
// be wasted traffic. Both matter once the inputs are not in cache, the usual case in a training
// step.
//
// Requires <cstdint> and <cstring>, and the Block structs of composite_cpu.cpp.

typedef float vf __attribute__((vector_size(4 * NEURAL3D_W)));
typedef int32_t vi __attribute__((vector_size(4 * NEURAL3D_W)));
static constexpr int W = NEURAL3D_W;

#define N3D_INLINE static inline __attribute__((always_inline))

#if NEURAL3D_W == 16
#define N3D_LO 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23
#define N3D_HI 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31
#define N3D_LOG2W 4
#elif NEURAL3D_W == 8
#define N3D_LO 0, 8, 1, 9, 2, 10, 3, 11
#define N3D_HI 4, 12, 5, 13, 6, 14, 7, 15
#define N3D_LOG2W 3
#elif NEURAL3D_W == 4
#define N3D_LO 0, 4, 1, 5
#define N3D_HI 2, 6, 3, 7
#define N3D_LOG2W 2
#else
#error "NEURAL3D_W must be 4, 8 or 16"
#endif
#ifdef __clang__
#define N3D_SHUF(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define N3D_SHUF(a, b, ...) __builtin_shuffle(a, b, (vi){__VA_ARGS__})
#endif

N3D_INLINE vf vset(float x) {
  vf v;
  for (int i = 0; i < W; ++i) v[i] = x;
  return v;
}
N3D_INLINE vf vload(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
N3D_INLINE void vstore(float* p, vf v) { std::memcpy(p, &v, sizeof v); }

// Store bypassing the caches (AVX-512, where a vector is one whole 64-byte line; AVX2 streams
// in store_rows) for the backward's gradients. Needs an _mm_sfence() before other threads read
// the results (composite_cpu.cpp issues it at the end of each chunk).
N3D_INLINE void vstore_stream(float* p, vf v) {
#if defined(N3D_X86) && NEURAL3D_W == 16
  if ((reinterpret_cast<uintptr_t>(p) & 63) == 0) {
    _mm512_stream_ps(p, (__m512)v);
    return;
  }
#endif
  vstore(p, v);
}

#if defined(N3D_AVX2_TRANSPOSE) && NEURAL3D_W == 8
// AVX2: the 8x8 transpose folded into the loads and stores. The 128-bit halves of the rows are
// loaded (stored) straight into (from) the upper and lower lanes, so only the 16 in-lane
// unpack/shuffle steps remain, instead of 24 with cross-lane permutes: the shuffle unit, not
// arithmetic, bounds these kernels at 8 lanes.
N3D_INLINE void load_rows(vf* v, const float* const* rows) {
  for (int h = 0; h < 2; ++h) {  // samples 4h .. 4h+3
    __m256 q[4];
    for (int i = 0; i < 4; ++i)  // lanes: [ray i | ray i+4]
      q[i] = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(rows[i] + 4 * h)),
                                  _mm_loadu_ps(rows[i + 4] + 4 * h), 1);
    const __m256 t0 = _mm256_unpacklo_ps(q[0], q[1]), t1 = _mm256_unpackhi_ps(q[0], q[1]);
    const __m256 t2 = _mm256_unpacklo_ps(q[2], q[3]), t3 = _mm256_unpackhi_ps(q[2], q[3]);
    v[4 * h + 0] = (vf)_mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    v[4 * h + 1] = (vf)_mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    v[4 * h + 2] = (vf)_mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    v[4 * h + 3] = (vf)_mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  }
}
// kStream: non-temporal stores when every row is 16-byte aligned (else plain ones).
template <bool kStream = false>
N3D_INLINE void store_rows(float* const* rows, const vf* v) {
  bool stream = kStream;
  if constexpr (kStream) {
    uintptr_t any = 0;
    for (int i = 0; i < 8; ++i) any |= reinterpret_cast<uintptr_t>(rows[i]);
    stream = (any & 15) == 0;  // non-temporal 128-bit stores need 16-byte alignment
  }
  const auto put = [stream](float* p, __m128 x) {
    if (stream) _mm_stream_ps(p, x);
    else _mm_storeu_ps(p, x);
  };
  for (int h = 0; h < 2; ++h) {
    const __m256* q = reinterpret_cast<const __m256*>(v + 4 * h);
    const __m256 t0 = _mm256_unpacklo_ps(q[0], q[1]), t1 = _mm256_unpackhi_ps(q[0], q[1]);
    const __m256 t2 = _mm256_unpacklo_ps(q[2], q[3]), t3 = _mm256_unpackhi_ps(q[2], q[3]);
    const __m256 r[4] = {_mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2)),
                         _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2))};
    for (int i = 0; i < 4; ++i) {  // lanes: [ray i | ray i+4]
      put(rows[i] + 4 * h, _mm256_castps256_ps128(r[i]));
      put(rows[i + 4] + 4 * h, _mm256_extractf128_ps(r[i], 1));
    }
  }
}
#else
// In-place transpose of a W x W tile held as W vectors (perfect-shuffle rounds).
N3D_INLINE void transpose(vf* v) {
  vf t[W];
  for (int round = 0; round < N3D_LOG2W; ++round) {
    for (int j = 0; j < W / 2; ++j) {
      t[2 * j] = N3D_SHUF(v[j], v[j + W / 2], N3D_LO);
      t[2 * j + 1] = N3D_SHUF(v[j], v[j + W / 2], N3D_HI);
    }
    for (int j = 0; j < W; ++j) v[j] = t[j];
  }
}

// W rows (ray l's W consecutive floats at rows[l]) -> W vectors, lanes = rays.
N3D_INLINE void load_rows(vf* v, const float* const* rows) {
  for (int l = 0; l < W; ++l) v[l] = vload(rows[l]);
  transpose(v);
}
// Inverse of load_rows; kStream: write with vstore_stream (results not read again here).
template <bool kStream = false>
N3D_INLINE void store_rows(float* const* rows, const vf* v) {
  vf t[W];
  for (int l = 0; l < W; ++l) t[l] = v[l];
  transpose(t);
  for (int l = 0; l < W; ++l) {
    if constexpr (kStream) vstore_stream(rows[l], t[l]);
    else vstore(rows[l], t[l]);
  }
}
#endif

// exp(x) (Cephes expf polynomial, ~1 ulp). Results below exp(-87) are flushed to 0 so no
// denormal is ever produced; NaN propagates.
N3D_INLINE vf vexp(vf x) {
  const vf lo = vset(-87.0f), hi = vset(88.0f);
  vi under = x < lo;
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  vf fx = x * vset(1.44269504088896341f);
  fx = (fx + vset(12582912.0f)) - vset(12582912.0f);  // round to nearest
  x = x - fx * vset(0.693359375f);
  x = x + fx * vset(2.12194440e-4f);
  vf z = x * x;
  vf y = vset(1.9875691500e-4f);
  y = y * x + vset(1.3981999507e-3f);
  y = y * x + vset(8.3334519073e-3f);
  y = y * x + vset(4.1665795894e-2f);
  y = y * x + vset(1.6666665459e-1f);
  y = y * x + vset(5.0000001201e-1f);
  y = y * z + x + vset(1.0f);
  vi n = __builtin_convertvector(fx, vi);
  vi bits = (n + 127) << 23;
  vf scale;
  std::memcpy(&scale, &bits, sizeof scale);
  y = y * scale;
  return under ? vset(0.0f) : y;
}

// Weight of a sample: T_i * (1 - exp(-tau)) with T_i = exp(logT) and Tn = exp(logT - tau).
// Thin samples (tau < 0.5) use a Taylor series for 1 - exp(-tau) (no cancellation); thick ones
// use T - Tn (relative error below ~4 ulp there), so a sample costs one exp, not two.
N3D_INLINE vf vweight(vf tau, vf T, vf Tn) {
  vf x = -tau;
  vf p = vset(1.0f / 40320.0f);
  p = p * x + vset(1.0f / 5040.0f);
  p = p * x + vset(1.0f / 720.0f);
  p = p * x + vset(1.0f / 120.0f);
  p = p * x + vset(1.0f / 24.0f);
  p = p * x + vset(1.0f / 6.0f);
  p = p * x + vset(0.5f);
  vf alpha_small = -(x + x * x * p);
  return tau < vset(0.5f) ? T * alpha_small : T - Tn;
}

N3D_INLINE bool all_below(vf a, vf b) {
  vi m = a < b;
  for (int i = 0; i < W; ++i)
    if (!m[i]) return false;
  return true;
}

// The rays of one block: per-lane offset (in samples) and count; lanes past nr are empty.
struct Rays {
  int64_t off[W];
  int64_t cnt[W];
  int64_t smax, nmin;
};

N3D_INLINE void block_rays(const BlockIn& in, int64_t r0, int nr, Rays& b) {
  b.smax = 0;
  b.nmin = nr < W ? 0 : INT64_MAX;
  for (int l = 0; l < W; ++l) {
    const int64_t r = r0 + l;
    b.off[l] = l < nr ? (in.offsets ? in.offsets[r] : r * in.S) : 0;
    b.cnt[l] = l < nr ? (in.counts ? in.counts[r] : in.S) : 0;
    b.smax = b.cnt[l] > b.smax ? b.cnt[l] : b.smax;
    b.nmin = b.cnt[l] < b.nmin ? b.cnt[l] : b.nmin;
  }
}

// Software prefetch of the next block's inputs into L2, a slice per tile. A block reads W short
// rows (one per ray) of each input, too short for the hardware prefetchers to ramp up on, so
// without it every tile waits on memory once the inputs are not in cache. Only a hint: a packed
// layout whose next rays are not stored together is skipped.
struct NextBlock {
  int64_t lo, hi;  // sample range [lo, hi) of the next block (hi == lo: nothing to prefetch)
};

N3D_INLINE NextBlock next_block(const BlockIn& in, int64_t r0) {
  const int64_t r1 = r0 + W;
  if (r1 >= in.R) return {0, 0};
  const int64_t r2 = (r1 + W < in.R ? r1 + W : in.R) - 1;  // last ray of the next block
  if (!in.offsets) return {r1 * in.S, (r2 + 1) * in.S};
  const int64_t lo = in.offsets[r1], hi = in.offsets[r2] + in.counts[r2];
  return (hi > lo && hi - lo <= 64 * W * W) ? NextBlock{lo, hi} : NextBlock{0, 0};
}

// Prefetch slice `part` of `parts` of the next block's densities, intervals, features (and an
// optional per-sample gradient).
N3D_INLINE void prefetch_slice(const BlockIn& in, const NextBlock& nb, int64_t part, int64_t parts,
                               const float* extra = nullptr) {
  const int64_t n = nb.hi - nb.lo;
  if (n <= 0) return;
  constexpr int64_t kLine = 16;  // floats per 64-byte line
  const int64_t a = nb.lo + n * part / parts, b = nb.lo + n * (part + 1) / parts;
  for (int64_t i = a; i < b; i += kLine) {
    __builtin_prefetch(in.sigma + i, 0, 2);
    __builtin_prefetch(in.t0 + i, 0, 2);
    __builtin_prefetch(in.t1 + i, 0, 2);
    if (extra) __builtin_prefetch(extra + i, 0, 2);
  }
  for (int64_t i = a * in.C; i < b * in.C; i += kLine) __builtin_prefetch(in.feat + i, 0, 2);
}

// Uniform blocks (padded layout, W full rays): ray l's chunk starts at p + l * stride.
N3D_INLINE void load_tile_u(vf* v, const float* p, int64_t stride) {
  const float* rows[W];
  for (int l = 0; l < W; ++l) rows[l] = p + l * stride;
  load_rows(v, rows);
}
// kStream: write with vstore_stream (results not read again by this kernel).
template <bool kStream = false>
N3D_INLINE void store_tile_u(const vf* v, float* p, int64_t stride) {
  float* rows[W];
  for (int l = 0; l < W; ++l) rows[l] = p + l * stride;
  store_rows<kStream>(rows, v);
}

// Valid floats of ray l's chunk k in the tile of samples [s0, s0+W) x `per` values per sample.
N3D_INLINE int64_t chunk_len(const Rays& b, int l, int64_t s0, int64_t per, int k) {
  const int64_t m = (b.cnt[l] - s0) * per - k * W;
  return m < 0 ? 0 : (m > W ? W : m);
}

// Load the tile of samples [s0, s0+W) x `per` values per sample, chunk `k` (W floats of each
// ray's per*W), into v[0..W) with lanes = rays; a ragged tile is staged zero-padded.
N3D_INLINE void load_tile(vf* v, const float* src, const Rays& b, int64_t s0, int64_t per, int k,
                          bool full) {
  const float* rows[W];
  float tmp[W][W];
  for (int l = 0; l < W; ++l) {
    const float* p = src + (b.off[l] + s0) * per + k * W;
    if (full) {
      rows[l] = p;
      continue;
    }
    const int64_t m = chunk_len(b, l, s0, per, k);
    for (int64_t q = 0; q < W; ++q) tmp[l][q] = q < m ? p[q] : 0.0f;
    rows[l] = tmp[l];
  }
  load_rows(v, rows);
}

// Inverse of load_tile: writes the valid part of each ray's chunk.
N3D_INLINE void store_tile(const vf* v, float* dst, const Rays& b, int64_t s0, int64_t per,
                           int k, bool full) {
  float* rows[W];
  float tmp[W][W];
  for (int l = 0; l < W; ++l) rows[l] = full ? dst + (b.off[l] + s0) * per + k * W : tmp[l];
  store_rows(rows, v);
  if (full) return;
  for (int l = 0; l < W; ++l) {
    float* p = dst + (b.off[l] + s0) * per + k * W;
    const int64_t m = chunk_len(b, l, s0, per, k);
    for (int64_t q = 0; q < m; ++q) p[q] = tmp[l][q];
  }
}

// Zero each ray's samples from s0 on (after early termination).
N3D_INLINE void zero_from(float* dst, const Rays& b, int64_t s0, int64_t per) {
  for (int l = 0; l < W; ++l)
    if (b.cnt[l] > s0)
      std::memset(dst + (b.off[l] + s0) * per, 0, sizeof(float) * (b.cnt[l] - s0) * per);
}

// Forward for rays r0 .. r0+nr-1. scratch: at least (2 * C * W + C) * W floats.
// CC > 0 compiles the channel count in (loops over channels unroll, accumulators stay in
// registers); CC = 0 takes it from `in` at run time.
template <int CC>
static void forward_block_c(const BlockIn& in, const FwdOut& o, int64_t r0, int nr,
                            float* scratch) {
  const int64_t C = CC > 0 ? CC : in.C;
  Rays b;
  block_rays(in, r0, nr, b);
  const bool uniform = !in.offsets && nr == W;  // padded layout, W full rays
  vf* F = reinterpret_cast<vf*>(scratch);  // C*W vectors (64-byte aligned): index j*C + c
  float* acc = scratch + C * W * W;          // C vectors
  std::memset(acc, 0, sizeof(float) * C * W);
  const vf log_eps = vset(in.log_eps);
  vf logT = vset(0.0f), T = vset(1.0f), depth = vset(0.0f), opac = vset(0.0f);
  vf accr[CC > 0 ? CC : 1];  // CC > 0: the accumulators, in registers
  for (auto& a : accr) a = vset(0.0f);
  vf SG[W], A[W], B[W];
  const NextBlock nb = next_block(in, r0);
  const int64_t ntiles = (b.smax + W - 1) / W;
  int64_t s0 = 0;
  for (; s0 < b.smax; s0 += W) {
    if (in.early_stop && all_below(logT, log_eps)) break;
    prefetch_slice(in, nb, s0 / W, ntiles);
    const bool full = s0 + W <= b.nmin;
    if (full && uniform) {
      const int64_t base = r0 * in.S + s0;
      load_tile_u(SG, in.sigma + base, in.S);
      load_tile_u(A, in.t0 + base, in.S);
      load_tile_u(B, in.t1 + base, in.S);
      for (int64_t k = 0; k < C; ++k) load_tile_u(F + k * W, in.feat + base * C + k * W, in.S * C);
    } else {
      load_tile(SG, in.sigma, b, s0, 1, 0, full);
      load_tile(A, in.t0, b, s0, 1, 0, full);
      load_tile(B, in.t1, b, s0, 1, 0, full);
      for (int64_t k = 0; k < C; ++k) load_tile(F + k * W, in.feat, b, s0, C, (int)k, full);
    }
    const int jmax = (int)(b.smax - s0 < W ? b.smax - s0 : W);
    for (int j = 0; j < jmax; ++j) {
      const vf dl = in.unit_delta ? vset(1.0f) : B[j] - A[j];
      const vf tau = SG[j] * dl;
      const vf logTn = logT - tau;
      const vf Tn = vexp(logTn);
      vf w = vweight(tau, T, Tn);
      w = logT >= log_eps ? w : vset(0.0f);
      logT = logTn;
      T = Tn;
      SG[j] = w;
      opac += w;
      depth += w * (vset(0.5f) * (A[j] + B[j]));
      const vf* fj = F + j * C;
      if constexpr (CC > 0) {
        for (int c = 0; c < CC; ++c) accr[c] += w * fj[c];
      } else {
        for (int64_t c = 0; c < C; ++c) vstore(acc + c * W, vload(acc + c * W) + w * fj[c]);
      }
    }
    if (o.weights) {
      if (full && uniform)
        store_tile_u(SG, o.weights + r0 * in.S + s0, in.S);
      else
        store_tile(SG, o.weights, b, s0, 1, 0, full);
    }
  }
  if (o.weights && s0 < b.smax) zero_from(o.weights, b, s0, 1);
  if constexpr (CC > 0)
    for (int c = 0; c < CC; ++c) vstore(acc + c * W, accr[c]);
  for (int l = 0; l < nr; ++l) {
    const int64_t r = r0 + l;
    o.depth[r] = depth[l];
    o.opacity[r] = opac[l];
    for (int64_t c = 0; c < C; ++c) o.out[r * C + c] = acc[c * W + l];
  }
}

// Backward for rays r0 .. r0+nr-1. Transmittance is recomputed (nothing per sample is kept
// between forward and backward). dL/dtau_k = T_{k+1} g_k - sum_{i>k} w_i g_i, where
// g_i = <dL/dout, c_i> + dL/ddepth * mid_i + dL/dopacity + dL/dw_i. The suffix ("remaining
// colour") sum is accumulated exactly, in reverse, from per-block scratch (3 floats per sample
// of the W rays in flight), instead of as total - prefix, which cancels catastrophically in fp32
// once a ray is nearly opaque.
// scratch: (C * W + C) * W + 3 * round_up(smax_all, W) * W floats, 64-byte aligned.
template <int CC>
static void backward_block_c(const BlockIn& in, const BwdIn& g, const BwdOut& o, int64_t r0,
                             int nr, int64_t smax_all, float* scratch) {
  const int64_t C = CC > 0 ? CC : in.C;
  Rays b;
  block_rays(in, r0, nr, b);
  const bool uniform = !in.offsets && nr == W;  // padded layout, W full rays
  const int64_t srnd = (smax_all + W - 1) / W * W;
  vf* F = reinterpret_cast<vf*>(scratch);  // C*W vectors: feature tile, index j*C + c
  float* GO = scratch + C * W * W;           // C vectors: dL/dout per ray
  vf* P = reinterpret_cast<vf*>(GO + C * W);  // per sample: T_{k+1} g_k dt_k
  vf* Q = P + srnd;                            // per sample: w_k g_k
  vf* D = Q + srnd;                            // per sample: dt_k (0 when inactive)
  std::memset(GO, 0, sizeof(float) * C * W);
  float gd[W] = {0}, gop[W] = {0};
  for (int l = 0; l < nr; ++l) {
    const int64_t r = r0 + l;
    for (int64_t c = 0; c < C; ++c) GO[c * W + l] = g.g_out[r * C + c];
    gd[l] = g.g_depth[r];
    gop[l] = g.g_opacity[r];
  }
  const vf log_eps = vset(in.log_eps);
  const vf vgd = vload(gd), vgop = vload(gop);
  vf gor[CC > 0 ? CC : 1];  // CC > 0: dL/dout per ray, in registers
  for (int c = 0; c < (CC > 0 ? CC : 0); ++c) gor[c] = vload(GO + c * W);
  vf SG[W], A[W], B[W], GW[W];
  vf logT = vset(0.0f), T = vset(1.0f);
  const NextBlock nb = next_block(in, r0);
  const int64_t ntiles = (b.smax + W - 1) / W;
  int64_t s0 = 0;
  for (; s0 < b.smax; s0 += W) {
    if (in.early_stop && all_below(logT, log_eps)) break;
    prefetch_slice(in, nb, s0 / W, ntiles, g.g_weights);
    const bool full = s0 + W <= b.nmin;
    const int64_t base = r0 * in.S + s0;
    if (full && uniform) {
      load_tile_u(SG, in.sigma + base, in.S);
      load_tile_u(A, in.t0 + base, in.S);
      load_tile_u(B, in.t1 + base, in.S);
      if (g.g_weights) load_tile_u(GW, g.g_weights + base, in.S);
      for (int64_t k = 0; k < C; ++k) load_tile_u(F + k * W, in.feat + base * C + k * W, in.S * C);
    } else {
      load_tile(SG, in.sigma, b, s0, 1, 0, full);
      load_tile(A, in.t0, b, s0, 1, 0, full);
      load_tile(B, in.t1, b, s0, 1, 0, full);
      if (g.g_weights) load_tile(GW, g.g_weights, b, s0, 1, 0, full);
      for (int64_t k = 0; k < C; ++k) load_tile(F + k * W, in.feat, b, s0, C, (int)k, full);
    }
    const int jmax = (int)(b.smax - s0 < W ? b.smax - s0 : W);
    for (int j = 0; j < jmax; ++j) {
      const vf dl = in.unit_delta ? vset(1.0f) : B[j] - A[j];
      const vf tau = SG[j] * dl;
      const vi active = logT >= log_eps;
      const vf logTn = logT - tau;
      const vf Tn = vexp(logTn);
      vf w = vweight(tau, T, Tn);
      w = active ? w : vset(0.0f);
      logT = logTn;
      vf gi = vgd * (vset(0.5f) * (A[j] + B[j])) + vgop;
      if (g.g_weights) gi += GW[j];
      vf* fj = F + j * C;
      for (int64_t c = 0; c < C; ++c) {
        const vf goc = CC > 0 ? gor[c] : vload(GO + c * W);
        gi += goc * fj[c];
        fj[c] = w * goc;  // d out_c / d feat = w_i: replaces the feature in place
      }
      P[s0 + j] = active ? Tn * gi * dl : vset(0.0f);
      Q[s0 + j] = w * gi;
      D[s0 + j] = active ? dl : vset(0.0f);
      T = Tn;
    }
    for (int j = jmax; j < W; ++j) P[s0 + j] = Q[s0 + j] = D[s0 + j] = vset(0.0f);
    if (full && uniform) {
      for (int64_t k = 0; k < C; ++k)
        store_tile_u<true>(F + k * W, o.g_feat + base * C + k * W, in.S * C);
    } else {
      for (int64_t k = 0; k < C; ++k) store_tile(F + k * W, o.g_feat, b, s0, C, (int)k, full);
    }
  }
  const int64_t s_end = s0;  // tiles processed (early termination may stop before smax)
  vf suffix = vset(0.0f);
  for (int64_t t0 = s_end - W; t0 >= 0; t0 -= W) {
    for (int j = W - 1; j >= 0; --j) {
      SG[j] = P[t0 + j] - suffix * D[t0 + j];
      suffix += Q[t0 + j];
    }
    const bool full = t0 + W <= b.nmin;
    if (full && uniform)
      store_tile_u<true>(SG, o.g_sigma + r0 * in.S + t0, in.S);
    else
      store_tile(SG, o.g_sigma, b, t0, 1, 0, full);
  }
  if (s_end < b.smax) {
    zero_from(o.g_sigma, b, s_end, 1);
    zero_from(o.g_feat, b, s_end, C);
  }
}

// Entry points: RGB (C = 3) and single-channel (C = 1) blocks get specialised code.
static void forward_block(const BlockIn& in, const FwdOut& o, int64_t r0, int nr,
                          int64_t /*smax_all*/, float* scratch) {
  if (in.C == 3) return forward_block_c<3>(in, o, r0, nr, scratch);
  if (in.C == 1) return forward_block_c<1>(in, o, r0, nr, scratch);
  forward_block_c<0>(in, o, r0, nr, scratch);
}

static void backward_block(const BlockIn& in, const BwdIn& g, const BwdOut& o, int64_t r0, int nr,
                           int64_t smax_all, float* scratch) {
  if (in.C == 3) return backward_block_c<3>(in, g, o, r0, nr, smax_all, scratch);
  if (in.C == 1) return backward_block_c<1>(in, g, o, r0, nr, smax_all, scratch);
  backward_block_c<0>(in, g, o, r0, nr, smax_all, scratch);
}

#undef N3D_INLINE
#undef N3D_LO
#undef N3D_HI
#undef N3D_LOG2W
#undef N3D_SHUF
