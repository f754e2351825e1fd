//! `repsite`: the replication engine as a real daemon over TCP (the driver lands with the
//! simulated-world issue; until then this binary only reports its version).

fn main() {
    println!("repsite {}", env!("CARGO_PKG_VERSION"));
}
