// neural3d: vectorised CPU compositing, lanes = rays.
//
// This header is included several times by composite_cpu.cpp, each time inside its own namespace
// and under its own `#pragma GCC target` (baseline, AVX2+FMA, AVX-512), with NEURAL3D_W (lanes)
// defined. It uses GCC/Clang vector extensions only, so the same source compiles for any ISA;
// composite_cpu.cpp picks the best compiled variant at run time (CPU feature check).
//
// A block of up to W rays is transposed into scratch buffers [S][W] (lanes = rays) so the
// sequential scan over samples runs on W rays at once. Packed rays of different lengths are
// padded with zero-density, zero-length samples, which contribute nothing.
//
// Requires <cstdint> and <cstring>, and the Block structs of composite_cpu.cpp.

typedef float vf __attribute__((vector_size(4 * NEURAL3D_W)));
typedef int32_t vi __attribute__((vector_size(4 * NEURAL3D_W)));
static constexpr int W = NEURAL3D_W;

static inline vf vset(float x) {
  vf v;
  for (int i = 0; i < W; ++i) v[i] = x;
  return v;
}
static inline vf vload(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
static inline void vstore(float* p, vf v) { std::memcpy(p, &v, sizeof v); }

// exp(x) (Cephes expf polynomial, ~1 ulp). Results below exp(-87) are flushed to 0 so no
// denormal is ever produced; NaN propagates.
static inline vf vexp(vf x) {
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

// 1 - exp(-tau) for tau >= 0, accurate for thin samples (Taylor series below 0.5).
static inline vf valpha(vf tau) {
  vf x = -tau;
  vf p = vset(1.0f / 40320.0f);
  p = p * x + vset(1.0f / 5040.0f);
  p = p * x + vset(1.0f / 720.0f);
  p = p * x + vset(1.0f / 120.0f);
  p = p * x + vset(1.0f / 24.0f);
  p = p * x + vset(1.0f / 6.0f);
  p = p * x + vset(0.5f);
  vf small = -(x + x * x * p);
  vf big = vset(1.0f) - vexp(x);
  return tau < vset(0.5f) ? small : big;
}

static inline bool all_below(vf a, vf b) {
  vi m = a < b;
  for (int i = 0; i < W; ++i)
    if (!m[i]) return false;
  return true;
}

static constexpr int64_t kCheckEvery = 8;  // early-termination test granularity (samples)

// Copy a block of rays into lanes: sig/del/mid [smax][W], feat [smax][C][W].
static inline void gather_block(const BlockIn& in, int64_t r0, int nr, int64_t smax, float* sig,
                                float* del, float* mid, float* feat, float* gw,
                                const float* gw_src) {
  const int64_t C = in.C;
  std::memset(sig, 0, sizeof(float) * smax * W);
  std::memset(del, 0, sizeof(float) * smax * W);
  std::memset(mid, 0, sizeof(float) * smax * W);
  std::memset(feat, 0, sizeof(float) * smax * C * W);
  if (gw) std::memset(gw, 0, sizeof(float) * smax * W);
  for (int l = 0; l < nr; ++l) {
    const int64_t r = r0 + l;
    const int64_t off = in.offsets ? in.offsets[r] : r * in.S;
    const int64_t n = in.counts ? in.counts[r] : in.S;
    const float* s_ = in.sigma + off;
    const float* a_ = in.t0 + off;
    const float* b_ = in.t1 + off;
    const float* f_ = in.feat + off * C;
    for (int64_t s = 0; s < n; ++s) {
      sig[s * W + l] = s_[s];
      del[s * W + l] = in.unit_delta ? 1.0f : b_[s] - a_[s];
      mid[s * W + l] = 0.5f * (a_[s] + b_[s]);
    }
    for (int64_t s = 0; s < n; ++s)
      for (int64_t c = 0; c < C; ++c) feat[(s * C + c) * W + l] = f_[s * C + c];
    if (gw)
      for (int64_t s = 0; s < n; ++s) gw[s * W + l] = gw_src[off + s];
  }
}

// Forward for rays r0 .. r0+nr-1. scratch: (3 + C) * smax * W + C * W floats.
static void forward_block(const BlockIn& in, const FwdOut& o, int64_t r0, int nr, int64_t smax,
                          float* scratch) {
  const int64_t C = in.C;
  float* sig = scratch;
  float* del = sig + smax * W;
  float* mid = del + smax * W;
  float* feat = mid + smax * W;
  float* acc = feat + smax * C * W;
  gather_block(in, r0, nr, smax, sig, del, mid, feat, nullptr, nullptr);
  std::memset(acc, 0, sizeof(float) * C * W);
  const vf log_eps = vset(in.log_eps);
  vf logT = vset(0.0f), T = vset(1.0f), depth = vset(0.0f), opac = vset(0.0f);
  int64_t s_end = smax;
  for (int64_t s = 0; s < smax; ++s) {
    if (in.early_stop && s % kCheckEvery == 0 && all_below(logT, log_eps)) {
      s_end = s;
      break;
    }
    vf tau = vload(sig + s * W) * vload(del + s * W);
    vf w = T * valpha(tau);
    w = logT >= log_eps ? w : vset(0.0f);
    logT = logT - tau;
    T = vexp(logT);
    vstore(sig + s * W, w);  // the weight replaces the density in scratch
    opac += w;
    depth += w * vload(mid + s * W);
    const float* fs = feat + s * C * W;
    for (int64_t c = 0; c < C; ++c) vstore(acc + c * W, vload(acc + c * W) + w * vload(fs + c * W));
  }
  for (int l = 0; l < nr; ++l) {
    const int64_t r = r0 + l;
    o.depth[r] = depth[l];
    o.opacity[r] = opac[l];
    for (int64_t c = 0; c < C; ++c) o.out[r * C + c] = acc[c * W + l];
    if (o.weights) {
      const int64_t off = in.offsets ? in.offsets[r] : r * in.S;
      const int64_t n = in.counts ? in.counts[r] : in.S;
      for (int64_t s = 0; s < n; ++s) o.weights[off + s] = s < s_end ? sig[s * W + l] : 0.0f;
    }
  }
}

// Backward for rays r0 .. r0+nr-1: recomputes transmittance; suffix ("remaining colour") form
// dL/dtau_k = T_{k+1} g_k - sum_{i>k} w_i g_i, with the suffix taken from the saved outputs.
// scratch: (4 + C) * smax * W + C * W floats.
static void backward_block(const BlockIn& in, const BwdIn& g, const BwdOut& o, int64_t r0, int nr,
                           int64_t smax, float* scratch) {
  const int64_t C = in.C;
  float* sig = scratch;
  float* del = sig + smax * W;
  float* mid = del + smax * W;
  float* gw = mid + smax * W;
  float* feat = gw + smax * W;
  float* gob = feat + smax * C * W;
  gather_block(in, r0, nr, smax, sig, del, mid, feat, g.g_weights ? gw : nullptr, g.g_weights);
  // per-ray constants in lanes
  std::memset(gob, 0, sizeof(float) * C * W);
  float tot[NEURAL3D_W] = {0}, gd[NEURAL3D_W] = {0}, gop[NEURAL3D_W] = {0};
  for (int l = 0; l < nr; ++l) {
    const int64_t r = r0 + l;
    double t = g.g_depth[r] * (double)g.depth[r] + g.g_opacity[r] * (double)g.opacity[r];
    for (int64_t c = 0; c < C; ++c) {
      gob[c * W + l] = g.g_out[r * C + c];
      t += (double)g.g_out[r * C + c] * g.out[r * C + c];
    }
    tot[l] = (float)t;
    gd[l] = g.g_depth[r];
    gop[l] = g.g_opacity[r];
  }
  const vf log_eps = vset(in.log_eps);
  const vf vgd = vload(gd), vgop = vload(gop);
  vf total = vload(tot);
  if (g.g_weights) {  // the weights' own gradient adds sum_i w_i gw_i to the total: one more scan
    vf logT = vset(0.0f), T = vset(1.0f), extra = vset(0.0f);
    for (int64_t s = 0; s < smax; ++s) {
      if (in.early_stop && s % kCheckEvery == 0 && all_below(logT, log_eps)) break;
      vf tau = vload(sig + s * W) * vload(del + s * W);
      vf w = T * valpha(tau);
      w = logT >= log_eps ? w : vset(0.0f);
      logT = logT - tau;
      T = vexp(logT);
      extra += w * vload(gw + s * W);
    }
    total += extra;
  }
  vf logT = vset(0.0f), T = vset(1.0f), prefix = vset(0.0f);
  int64_t s_end = smax;
  for (int64_t s = 0; s < smax; ++s) {
    if (in.early_stop && s % kCheckEvery == 0 && all_below(logT, log_eps)) {
      s_end = s;
      break;
    }
    vf dl = vload(del + s * W);
    vf tau = vload(sig + s * W) * dl;
    vi active = logT >= log_eps;
    vf w = T * valpha(tau);
    w = active ? w : vset(0.0f);
    logT = logT - tau;
    vf Tn = vexp(logT);
    vf gi = vgd * vload(mid + s * W) + vgop;
    if (g.g_weights) gi += vload(gw + s * W);
    float* fs = feat + s * C * W;
    for (int64_t c = 0; c < C; ++c) {
      vf goc = vload(gob + c * W);
      gi += goc * vload(fs + c * W);
      vstore(fs + c * W, w * goc);  // d out_c / d feat = w_i: replaces the feature in scratch
    }
    prefix += w * gi;
    vf gtau = Tn * gi - (total - prefix);
    gtau = active ? gtau : vset(0.0f);
    vstore(sig + s * W, gtau * dl);
    T = Tn;
  }
  for (int l = 0; l < nr; ++l) {
    const int64_t r = r0 + l;
    const int64_t off = in.offsets ? in.offsets[r] : r * in.S;
    const int64_t n = in.counts ? in.counts[r] : in.S;
    for (int64_t s = 0; s < n; ++s) o.g_sigma[off + s] = s < s_end ? sig[s * W + l] : 0.0f;
    float* gf = o.g_feat + off * C;
    for (int64_t s = 0; s < n; ++s)
      for (int64_t c = 0; c < C; ++c)
        gf[s * C + c] = s < s_end ? feat[(s * C + c) * W + l] : 0.0f;
  }
}
