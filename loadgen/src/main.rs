//! The load generator arrives with the server (see the load generator issue); until
//! then there is nothing on the network to drive.

fn main() {
    eprintln!(
        "ampd-loadgen: the server protocol is not built yet; see benches/ for engine benchmarks"
    );
    std::process::exit(2);
}
