/// mimalloc instead of glibc's malloc: the balancer allocates and frees a few
/// dozen small objects per request (header maps, futures, buffers), and
/// mimalloc's per-thread free lists do that in fewer instructions
/// (docs/benchmarks.md, "Instructions per request").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ebb::cli::main()
}
