// Test classes run one at a time: ILGPU's simulator runs every simulated GPU thread as an OS thread with
// real barriers, and on a 2-core machine two such classes at once (or one beside a Parallel.For-heavy CPU
// class) slow each other down by an order of magnitude. Serial is faster overall here.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
