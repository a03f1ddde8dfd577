/* OpenBLAS cblas_sgemm timings at bench/MatmulBench.cs's sizes: median and best GFLOP/s of 7 samples, and
   GFLOP per CPU-second of this process (clock()), meaningful on a shared machine. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static int cmp(const void *x, const void *y) { double a = *(const double *)x, b = *(const double *)y; return (a > b) - (a < b); }

/* sgemm [MxKxN ...]: those shapes instead of the four defaults. */
int main(int argc, char **argv) {
    int sizes[16][3] = {{256, 256, 256}, {512, 512, 512}, {1024, 1024, 1024}, {2048, 512, 2048}}, count = 4;
    if (argc > 1) {
        count = 0;
        for (int i = 1; i < argc && count < 16; i++)
            if (sscanf(argv[i], "%dx%dx%d", &sizes[count][0], &sizes[count][1], &sizes[count][2]) == 3) count++;
            else { fprintf(stderr, "sgemm: shape %s is not MxKxN\n", argv[i]); return 2; }
    }
    srand(0);
    for (int s = 0; s < count; s++) {
        int m = sizes[s][0], k = sizes[s][1], n = sizes[s][2];
        float *a = malloc(sizeof(float) * m * k), *b = malloc(sizeof(float) * k * n), *c = malloc(sizeof(float) * m * n);
        for (long i = 0; i < (long)m * k; i++) a[i] = rand() / (float)RAND_MAX - 0.5f;
        for (long i = 0; i < (long)k * n; i++) b[i] = rand() / (float)RAND_MAX - 0.5f;
        double flops = 2.0 * m * n * k, samples[7], cpu[7];
        int reps = flops > 2e9 ? 3 : (int)(2e9 / flops);
        for (int w = 0; w < 3; w++) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.f, a, k, b, n, 0.f, c, n);
        for (int r = 0; r < 7; r++) {
            double t = now();
            clock_t c0 = clock();
            for (int i = 0; i < reps; i++) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.f, a, k, b, n, 0.f, c, n);
            samples[r] = (now() - t) / reps;
            cpu[r] = (double)(clock() - c0) / CLOCKS_PER_SEC / reps;
        }
        qsort(samples, 7, sizeof(double), cmp);
        qsort(cpu, 7, sizeof(double), cmp);
        printf("sgemm  %5dx%5dx%5d  median %7.1f GFLOP/s  best %7.1f GFLOP/s  | per CPU-second: median %7.1f\n",
               m, k, n, flops / samples[3] / 1e9, flops / samples[0] / 1e9, flops / cpu[3] / 1e9);
        free(a); free(b); free(c);
    }
    return 0;
}
