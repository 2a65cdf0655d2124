// The CuPy generator's device functions, the preamble of its draw kernels (random.py).
//
// SplitMix64's output function of (key + counter * golden ratio): a counter-based generator, so the
// whole state is (key, counter) and any draw can be reproduced from it (checkpoints, resume).

__device__ __forceinline__ unsigned long long xpnet_mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

__device__ __forceinline__ double xpnet_unit(unsigned long long key, unsigned long long counter) {
    // (0, 1]: 53 random bits, plus one ulp so that log() never sees 0
    return ((double)(xpnet_mix64(key + counter * 0x9E3779B97F4A7C15ULL) >> 11) + 1.0) * 1.1102230246251565e-16;
}
