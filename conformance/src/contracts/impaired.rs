//! Contracts on impaired paths: transfers through the user-space network emulator
//! ([`crate::emulator`]) between the two ends.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use stoq_core::{
    Capability, CongestionAlgorithm, CongestionConfig, CongestionImplementation, TransportConfig,
};

use crate::emulator::{Blackhole, Emulator, Impairments};
use crate::util::{drain_and_hash, payload, send_all, sha256, LOCALHOST_V6};
use crate::{ensure, ContractResult, Failure, Harness, Outcome};

/// Sends `bytes` on one unidirectional stream from client to server through an emulator
/// with `up` and `down`, both ends configured with `config`, and checks that exactly those
/// bytes arrived (SHA-256 at the receiver) on a connection that stayed open. Returns the
/// emulator for its counters.
async fn transfer_through_with(
    h: &Harness,
    config: TransportConfig,
    up: Impairments,
    down: Impairments,
    bytes: usize,
    seed: u64,
) -> Result<Emulator, Failure> {
    let server_ep = h.server_endpoint(LOCALHOST_V6, config.clone())?;
    let emu = Emulator::start(server_ep.local_addr()?, up, down, seed).await?;
    let client_ep = h.client_endpoint(emu.addr(), config)?;
    let receiver = tokio::spawn(async move {
        let conn = server_ep.accept().await?;
        let mut recv = conn.accept_uni().await?;
        let got = drain_and_hash(&mut recv).await?;
        Ok::<_, Failure>((got, conn, server_ep))
    });
    let conn = client_ep.connect(emu.addr(), "localhost").await?;
    let data = payload(seed, bytes);
    let mut send = conn.open_uni().await?;
    send_all(&mut send, &data, 64 * 1024).await?;
    let ((n, hash), server_conn, _server_ep) = receiver.await??;
    ensure!(
        n == bytes as u64,
        "{n} bytes arrived of {bytes} sent through the impaired path"
    );
    ensure!(
        hash == sha256(&data),
        "the bytes that arrived differ from those sent (SHA-256)"
    );
    conn.close(0, b"done");
    server_conn.close(0, b"done");
    Ok(emu)
}

/// Every built-in congestion controller the backend runs: the engine's own NewReno, CUBIC
/// and BBR and, where it hosts STOQ's controllers ([`Capability::CustomCongestionControl`]),
/// STOQ's NewReno, CUBIC and BBRv3; each with `h.config` otherwise unchanged.
fn every_controller(h: &Harness) -> Vec<(String, TransportConfig)> {
    let mut implementations = vec![CongestionImplementation::Engine];
    if h.capabilities()
        .contains(Capability::CustomCongestionControl)
    {
        implementations.push(CongestionImplementation::Stoq);
    }
    let mut out = Vec::new();
    for implementation in implementations {
        for algorithm in [
            CongestionAlgorithm::NewReno,
            CongestionAlgorithm::Cubic,
            CongestionAlgorithm::Bbr,
        ] {
            let mut config = h.config.clone();
            config.congestion = CongestionConfig {
                algorithm,
                implementation,
                custom: None,
            };
            out.push((format!("{algorithm:?} ({implementation:?})"), config));
        }
    }
    out
}

/// Runs `transfer_through_with` once per controller of [`every_controller`], all at once
/// (each on its own endpoints and emulator, seeds `seed`, `seed + 1`, ...), and gives each
/// emulator to `check`. The first failure is returned, named after its controller.
async fn transfer_per_controller(
    h: &Harness,
    up: Impairments,
    down: Impairments,
    bytes: usize,
    seed: u64,
    check: impl Fn(&Emulator) -> Result<(), Failure>,
) -> ContractResult {
    let runs = every_controller(h)
        .into_iter()
        .enumerate()
        .map(|(i, (name, config))| {
            let (up, down) = (up.clone(), down.clone());
            async move {
                let r = transfer_through_with(h, config, up, down, bytes, seed + i as u64).await;
                (name, r)
            }
        });
    for (name, result) in futures_util::future::join_all(runs).await {
        result
            .and_then(|emu| check(&emu))
            .map_err(|f| Failure(format!("{name}: {}", f.0)))?;
    }
    Ok(Outcome::Passed)
}

/// 3 % random loss, 5 % reordering, 2 % duplication and 2 ms ± 1 ms of delay in both
/// directions: 1 MiB arrives byte-exact under every built-in congestion controller, the
/// engine's own (NewReno, CUBIC, BBR as the engine has them) and, where the backend hosts
/// STOQ's controllers ([`Capability::CustomCongestionControl`]), STOQ's NewReno, CUBIC
/// and BBRv3.
pub async fn impaired_path_delivers_intact(h: Harness) -> ContractResult {
    let path = Impairments {
        delay: Duration::from_millis(2),
        jitter: Duration::from_millis(1),
        loss: 0.03,
        reorder: 0.05,
        reorder_delay: Duration::from_millis(3),
        duplicate: 0.02,
        ..Impairments::default()
    };
    let mut seed = 0x1055;
    for (name, config) in every_controller(&h) {
        seed += 1;
        let emu = transfer_through_with(&h, config, path.clone(), path.clone(), 1 << 20, seed)
            .await
            .map_err(|f| Failure(format!("{name}: {}", f.0)))?;
        let lost = emu.up.dropped_loss.load(Relaxed) + emu.down.dropped_loss.load(Relaxed);
        let dups = emu.up.duplicated.load(Relaxed) + emu.down.duplicated.load(Relaxed);
        ensure!(
            lost > 0 && dups > 0,
            "{name}: the emulator impaired nothing (lost {lost}, duplicated {dups})"
        );
    }
    Ok(Outcome::Passed)
}

/// 3 % of the datagrams in each direction have a byte flipped: QUIC's packet protection
/// rejects them, and 2 MiB still arrive byte-exact (a corrupted packet is never delivered
/// as data), under every built-in congestion controller (as in
/// [`impaired_path_delivers_intact`]; the controllers run at once, each on its own path).
pub async fn corrupted_packets_are_dropped(h: Harness) -> ContractResult {
    let path = Impairments {
        corrupt: 0.03,
        ..Impairments::default()
    };
    transfer_per_controller(&h, path.clone(), path, 2 << 20, 0xc0ee, |emu| {
        let corrupted = emu.up.corrupted.load(Relaxed) + emu.down.corrupted.load(Relaxed);
        ensure!(corrupted > 0, "the emulator corrupted nothing");
        Ok(())
    })
    .await
}

/// A 2-second blackhole in both directions in the middle of a transfer through a
/// 40 Mbit/s bottleneck: the connection survives it (the idle timeout is longer) and
/// 4 MiB arrive byte-exact, under every built-in congestion controller (the controllers
/// run at once, each on its own path).
pub async fn blackhole_is_survived(h: Harness) -> ContractResult {
    ensure!(
        h.config.idle_timeout > Duration::from_secs(4),
        "the harness idle timeout ({:?}) is too short for this contract",
        h.config.idle_timeout
    );
    let hole = Blackhole {
        start: Duration::from_millis(300),
        duration: Duration::from_secs(2),
    };
    let up = Impairments {
        rate: Some(40_000_000),
        queue_bytes: 256 * 1024,
        blackholes: vec![hole],
        ..Impairments::default()
    };
    let down = Impairments {
        blackholes: vec![hole],
        ..Impairments::default()
    };
    transfer_per_controller(&h, up, down, 4 << 20, 0xb1ac, |emu| {
        let dropped = emu.up.dropped_blackhole.load(Relaxed);
        ensure!(
            dropped > 0,
            "nothing fell into the blackhole: the transfer ended before it began"
        );
        Ok(())
    })
    .await
}
