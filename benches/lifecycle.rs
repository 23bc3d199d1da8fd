//! Device lifecycle on the host runtime: load the test driver, add a device, start, idle,
//! wake, remove, as many times as criterion asks, with the trace on and off.
//!
//! The goal (issue: benchmarks) is under 1 s for 10,000 devices on a 2-core machine; the
//! `lifecycle/10000 devices` figure is that total. Run: `cargo bench --bench lifecycle`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use kmdf::host::{PnpAction, Runtime};
use kmdf::sync::SpinLock;
use kmdf::{Device, DeviceInit, DevicePowerState, Driver, PnpPowerCallbacks, Result};

/// A driver whose device registers every PnP/power/SMIO callback, each doing a little work.
struct Bench;

impl Driver for Bench {
    fn driver_entry() -> Result<Self> {
        Ok(Bench)
    }
    fn device_add(&self, device_init: DeviceInit<'_>) -> Result {
        device_init.create(BenchDevice { transitions: SpinLock::new(0)? })?;
        Ok(())
    }
}

struct BenchDevice {
    transitions: SpinLock<u64>,
}

impl BenchDevice {
    fn tick(&self) -> Result {
        let mut transitions = self.transitions.lock();
        *transitions += 1;
        // A callback that fails sometimes, as real ones do; never in this benchmark.
        if *transitions == u64::MAX { Err(kmdf::NtError::UNSUCCESSFUL) } else { Ok(()) }
    }
}

kmdf::vtable! {
    impl PnpPowerCallbacks for BenchDevice {
        fn prepare_hardware(&self, _d: &Device<Self>, _r: kmdf::pnp::HardwareResources<'_>) -> Result { self.tick() }
        fn release_hardware(&self, _d: &Device<Self>, _r: kmdf::pnp::HardwareResources<'_>) -> Result { self.tick() }
        fn d0_entry(&self, _d: &Device<Self>, _s: DevicePowerState) -> Result { self.tick() }
        fn d0_entry_post_interrupts_enabled(&self, _d: &Device<Self>, _s: DevicePowerState) -> Result { self.tick() }
        fn d0_exit_pre_interrupts_disabled(&self, _d: &Device<Self>, _s: DevicePowerState) -> Result { self.tick() }
        fn d0_exit(&self, _d: &Device<Self>, _s: DevicePowerState) -> Result { self.tick() }
        fn query_remove(&self, _d: &Device<Self>) -> Result { self.tick() }
        fn self_managed_io_init(&self, _d: &Device<Self>) -> Result { self.tick() }
        fn self_managed_io_suspend(&self, _d: &Device<Self>) -> Result { self.tick() }
        fn self_managed_io_restart(&self, _d: &Device<Self>) -> Result { self.tick() }
        fn self_managed_io_flush(&self, _d: &Device<Self>) { let _ = self.tick(); }
        fn self_managed_io_cleanup(&self, _d: &Device<Self>) { let _ = self.tick(); }
        fn cleanup(&self, _d: &Device<Self>) { let _ = self.tick(); }
    }
}

/// One device's life in an existing runtime.
fn life(driver: &kmdf::host::LoadedDriver<Bench>) {
    let node = driver.add_device().expect("add");
    for action in [PnpAction::Start, PnpAction::Idle, PnpAction::Wake, PnpAction::Remove] {
        node.apply(action).expect("action");
    }
    black_box(node);
}

/// `devices` lives, each in a fresh runtime with the driver loaded (as a test would).
fn lives(devices: u64, tracing: bool) -> Duration {
    let started = Instant::now();
    for _ in 0..devices {
        let runtime = Runtime::new();
        runtime.set_tracing(tracing);
        let driver = runtime.load::<Bench>().expect("load");
        life(&driver);
        driver.unload().expect("unload");
    }
    started.elapsed()
}

fn lifecycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("lifecycle");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.bench_function("10000 devices, trace on", |b| b.iter(|| lives(10_000, true)));
    group.bench_function("10000 devices, trace off", |b| b.iter(|| lives(10_000, false)));
    group.finish();

    let mut group = c.benchmark_group("lifecycle per device");
    group.bench_function("trace on", |b| b.iter_custom(|n| lives(n, true)));
    group.bench_function("trace off", |b| b.iter_custom(|n| lives(n, false)));
    group.finish();

    // Ratio, printed for BENCHMARKS.md.
    let on = lives(10_000, true);
    let off = lives(10_000, false);
    println!(
        "lifecycle: 10000 devices: trace on {on:.2?} ({:.1} us/device), trace off {off:.2?} \
         ({:.1} us/device), trace cost x{:.2}",
        on.as_secs_f64() * 1e6 / 10_000.0,
        off.as_secs_f64() * 1e6 / 10_000.0,
        on.as_secs_f64() / off.as_secs_f64(),
    );
}

criterion_group!(benches, lifecycle);
criterion_main!(benches);
