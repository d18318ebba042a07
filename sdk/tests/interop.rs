//! The interoperability matrix: for every ordered (client backend, server backend) pair of
//! the compiled-in backends, a handshake, a bidirectional echo, a 64 MiB transfer with a
//! SHA-256 check at the receiver, and a close whose code and reason the server observes.
//! (Phoenix is the one crate that knows every backend, so the matrix lives here.)

async fn pair(client: &str, server: &str) {
    let harness = stoq_conformance::Harness::pair(
        phoenix::backend(client).expect("compiled-in backend"),
        phoenix::backend(server).expect("compiled-in backend"),
    );
    match stoq_conformance::interop::interop(harness).await {
        Ok(r) => println!(
            "{client} -> {server}: handshake {:.2} ms, {} MiB verified at {:.0} Mbit/s, close reason checked: {}",
            r.handshake_ms,
            r.transfer_bytes >> 20,
            r.transfer_mbps,
            r.close_reason_checked
        ),
        Err(f) => panic!("interop {client} -> {server} failed: {f}"),
    }
}

macro_rules! pairs {
    ($($name:ident: $client:literal -> $server:literal if $cfg:meta;)*) => {
        $(
            #[cfg($cfg)]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                pair($client, $server).await;
            }
        )*

        /// The pairs this build generated tests for (one push per cfg, so no literal).
        #[allow(clippy::vec_init_then_push)]
        fn generated_pairs() -> Vec<(&'static str, &'static str)> {
            #[allow(unused_mut)]
            let mut v = Vec::new();
            $(
                #[cfg($cfg)]
                v.push(($client, $server));
            )*
            v
        }
    };
}

pairs! {
    quinn_to_quinn: "quinn" -> "quinn" if feature = "quinn";
    quinn_to_s2n: "quinn" -> "s2n" if all(feature = "quinn", feature = "s2n");
    quinn_to_quiche: "quinn" -> "quiche" if all(feature = "quinn", feature = "quiche");
    s2n_to_quinn: "s2n" -> "quinn" if all(feature = "s2n", feature = "quinn");
    s2n_to_s2n: "s2n" -> "s2n" if feature = "s2n";
    s2n_to_quiche: "s2n" -> "quiche" if all(feature = "s2n", feature = "quiche");
    quiche_to_quinn: "quiche" -> "quinn" if all(feature = "quiche", feature = "quinn");
    quiche_to_s2n: "quiche" -> "s2n" if all(feature = "quiche", feature = "s2n");
    quiche_to_quiche: "quiche" -> "quiche" if feature = "quiche";
    quinn_to_uring: "quinn" -> "uring" if all(feature = "quinn", feature = "uring");
    s2n_to_uring: "s2n" -> "uring" if all(feature = "s2n", feature = "uring");
    quiche_to_uring: "quiche" -> "uring" if all(feature = "quiche", feature = "uring");
    uring_to_quinn: "uring" -> "quinn" if all(feature = "uring", feature = "quinn");
    uring_to_s2n: "uring" -> "s2n" if all(feature = "uring", feature = "s2n");
    uring_to_quiche: "uring" -> "quiche" if all(feature = "uring", feature = "quiche");
    uring_to_uring: "uring" -> "uring" if feature = "uring";
}

#[test]
fn every_compiled_pair_has_a_test() {
    let generated = generated_pairs();
    for client in phoenix::backend_names() {
        for server in phoenix::backend_names() {
            assert!(
                generated.contains(&(client, server)),
                "no interop test for {client} -> {server}: add it to the list above"
            );
        }
    }
}
