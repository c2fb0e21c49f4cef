//! What a CPU limit costs a filter: runs the same guest code with no limit, with
//! epoch interruption (what Sluice uses) and with fuel, and prints the time of each
//! and its ratio to no limit. `cargo run --release -p wasm-limits`.

#![warn(missing_docs)]

use std::time::{Duration, Instant};

use wasmtime::{Config, Engine, Instance, Module, Store};

/// A loop of loads, arithmetic and branches, typical of a filter scanning a buffer.
const GUEST: &str = r#"(module
  (memory 1)
  (func (export "scan") (param $n i32) (result i32) (local $i i32) (local $acc i32)
    (loop $l
      (local.set $acc (i32.add (local.get $acc)
        (i32.xor (i32.load8_u (i32.and (local.get $i) (i32.const 65535))) (local.get $i))))
      (if (i32.eq (i32.and (local.get $acc) (i32.const 7)) (i32.const 3))
        (then (local.set $acc (i32.rotl (local.get $acc) (i32.const 5)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
    (local.get $acc)))"#;

#[derive(Clone, Copy, Debug)]
enum Limit {
    None,
    Epoch,
    Fuel,
}

fn run(limit: Limit, n: i32, rounds: usize) -> Duration {
    let mut config = Config::new();
    match limit {
        Limit::None => {}
        Limit::Epoch => {
            config.epoch_interruption(true);
        }
        Limit::Fuel => {
            config.consume_fuel(true);
        }
    }
    let engine = Engine::new(&config).unwrap();
    let module = Module::new(&engine, GUEST).unwrap();
    let mut store = Store::new(&engine, ());
    match limit {
        Limit::None => {}
        Limit::Epoch => store.set_epoch_deadline(u64::MAX / 2),
        Limit::Fuel => store.set_fuel(u64::MAX / 2).unwrap(),
    }
    let instance = Instance::new(&mut store, &module, &[]).unwrap();
    let scan = instance
        .get_typed_func::<i32, i32>(&mut store, "scan")
        .unwrap();
    scan.call(&mut store, n).unwrap(); // warm-up
    let mut best = Duration::MAX;
    for _ in 0..rounds {
        let t = Instant::now();
        std::hint::black_box(scan.call(&mut store, n).unwrap());
        best = best.min(t.elapsed());
    }
    best
}

fn main() {
    let n = 50_000_000;
    let rounds = 7;
    println!("guest loop of {n} iterations, best of {rounds} rounds");
    let base = run(Limit::None, n, rounds);
    println!("| limit | time | ns/iteration | vs no limit |");
    println!("|---|---:|---:|---:|");
    for limit in [Limit::None, Limit::Epoch, Limit::Fuel] {
        let t = if matches!(limit, Limit::None) {
            base
        } else {
            run(limit, n, rounds)
        };
        println!(
            "| {:?} | {:.1} ms | {:.3} | {:.2}x |",
            limit,
            t.as_secs_f64() * 1e3,
            t.as_secs_f64() * 1e9 / n as f64,
            t.as_secs_f64() / base.as_secs_f64()
        );
    }
}
