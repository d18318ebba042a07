//! `phoenix send` and `phoenix recv`: file transfer with a progress bar and a SHA-256
//! verified at the receiver.
//!
//! Wire format on one bidirectional stream: a header line of JSON `{"name":..,"size":..}`
//! and `\n`, then exactly `size` bytes, then the 32-byte SHA-256 of those bytes, then FIN.
//! The receiver answers one JSON line `{"ok":bool,"bytes":..,"sha256":..,"error":..}`.
//! A file is renamed into place only once its hash matched; a partial file never remains.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::existing_file;
use crate::CliError;

/// Largest header line accepted.
const MAX_HEADER: usize = 4096;
/// Largest reply accepted.
const MAX_REPLY: usize = 4096;
/// Read/write buffer size.
const BUF: usize = 256 * 1024;

#[derive(Serialize, Deserialize)]
struct Header {
    name: String,
    size: u64,
}

#[derive(Serialize, Deserialize, Debug)]
struct Reply {
    ok: bool,
    bytes: u64,
    sha256: String,
    error: Option<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Arguments of `phoenix send`.
#[derive(clap::Args, Debug)]
pub struct SendArgs {
    /// The file to send.
    file: PathBuf,
    /// The receiver (`phoenix recv`), as HOST:PORT.
    #[arg(long)]
    to: String,
}

/// Arguments of `phoenix recv`.
#[derive(clap::Args, Debug)]
pub struct RecvArgs {
    /// Address to listen on.
    #[arg(long, default_value = "[::]:4433")]
    listen: String,
    /// Directory to write received files into.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Exit after this many files (0: run until interrupted).
    #[arg(long, default_value_t = 1)]
    count: u64,
}

fn bytes_bar(show: bool, len: u64, what: &str) -> Option<indicatif::ProgressBar> {
    show.then(|| {
        let bar = indicatif::ProgressBar::new(len);
        bar.set_style(
            indicatif::ProgressStyle::with_template(&format!(
                "{what} {{bar:30}} {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}}"
            ))
            .expect("static template"),
        );
        bar
    })
}

pub async fn send(
    global: &crate::common::Global,
    args: SendArgs,
    json: bool,
) -> Result<(), CliError> {
    existing_file(&args.file, "file")?;
    let name = args
        .file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| CliError::input(format!("{} has no usable file name", args.file.display())))?
        .to_string();
    let mut file = tokio::fs::File::open(&args.file)
        .await
        .map_err(|e| CliError::input(format!("file {}: {e}", args.file.display())))?;
    let size = file
        .metadata()
        .await
        .map_err(|e| CliError::input(format!("file {}: {e}", args.file.display())))?
        .len();
    let phoenix = global.phoenix().await?;
    let conn = phoenix.connect(&args.to).await?;
    let (mut send, mut recv) = conn.open_stream().await?;
    let start = Instant::now();
    let mut header = serde_json::to_vec(&Header {
        name: name.clone(),
        size,
    })
    .expect("json");
    header.push(b'\n');
    send.write_all(&header)
        .await
        .map_err(|e| CliError::failed(format!("sending header: {e}")))?;
    let bar = bytes_bar(!json, size, "send");
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF];
    let mut sent = 0u64;
    while sent < size {
        let n = file
            .read(&mut buf)
            .await
            .map_err(|e| CliError::failed(format!("reading {}: {e}", args.file.display())))?;
        if n == 0 {
            return Err(CliError::failed(format!(
                "{} shrank while sending ({sent} of {size} bytes)",
                args.file.display()
            )));
        }
        let n = n.min((size - sent) as usize);
        hasher.update(&buf[..n]);
        send.write_all(&buf[..n])
            .await
            .map_err(|e| CliError::failed(format!("sending: {e}")))?;
        sent += n as u64;
        if let Some(bar) = &bar {
            bar.set_position(sent);
        }
    }
    let digest = hasher.finalize();
    send.write_all(&digest)
        .await
        .map_err(|e| CliError::failed(format!("sending hash: {e}")))?;
    send.finish()
        .await
        .map_err(|e| CliError::failed(format!("finishing: {e}")))?;
    let reply = recv
        .read_to_end(MAX_REPLY)
        .await
        .map_err(|e| CliError::failed(format!("waiting for the receiver's verdict: {e}")))?
        .ok_or_else(|| CliError::failed("receiver's verdict too long"))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let reply: Reply = serde_json::from_slice(&reply)
        .map_err(|e| CliError::failed(format!("receiver sent a malformed verdict: {e}")))?;
    let secs = start.elapsed().as_secs_f64();
    conn.close(0, b"done");
    if json {
        println!(
            "{}",
            serde_json::json!({
                "file": args.file, "bytes": size, "sha256": hex(&digest),
                "receiver": reply, "seconds": secs,
            })
        );
    } else if reply.ok {
        println!(
            "sent {} ({size} bytes) in {secs:.2} s; receiver verified SHA-256 {}",
            args.file.display(),
            reply.sha256
        );
    }
    if !reply.ok || reply.sha256 != hex(&digest) {
        return Err(CliError::failed(format!(
            "receiver rejected the file: {}",
            reply.error.unwrap_or_else(|| "hash mismatch".into())
        )));
    }
    Ok(())
}

/// A file name safe to create inside the output directory: the final path component only.
fn safe_name(name: &str) -> Option<&str> {
    let base = Path::new(name).file_name()?.to_str()?;
    (!base.is_empty() && base != "." && base != "..").then_some(base)
}

async fn receive_one(
    send: &mut phoenix::SendStream,
    recv: &mut phoenix::RecvStream,
    out: &Path,
    json: bool,
) -> Result<(PathBuf, u64, String), String> {
    // Header line.
    let mut header = Vec::new();
    loop {
        let mut byte = [0u8; 1];
        let n = recv
            .read(&mut byte)
            .await
            .map_err(|e| format!("reading header: {e}"))?;
        if n == 0 {
            return Err("stream ended inside the header".into());
        }
        if byte[0] == b'\n' {
            break;
        }
        header.push(byte[0]);
        if header.len() > MAX_HEADER {
            return Err("header too long".into());
        }
    }
    let header: Header =
        serde_json::from_slice(&header).map_err(|e| format!("malformed header: {e}"))?;
    let name =
        safe_name(&header.name).ok_or_else(|| format!("unusable file name {:?}", header.name))?;
    let dest = out.join(name);
    let partial = out.join(format!(".{name}.partial"));
    let mut file = tokio::fs::File::create(&partial)
        .await
        .map_err(|e| format!("creating {}: {e}", partial.display()))?;
    let bar = bytes_bar(!json, header.size, "recv");
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    let result: Result<(), String> = async {
        let mut buf = vec![0u8; BUF];
        while got < header.size {
            let want = ((header.size - got) as usize).min(BUF);
            let n = recv
                .read(&mut buf[..want])
                .await
                .map_err(|e| format!("receiving: {e}"))?;
            if n == 0 {
                return Err(format!("stream ended after {got} of {} bytes", header.size));
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])
                .await
                .map_err(|e| format!("writing: {e}"))?;
            got += n as u64;
            if let Some(bar) = &bar {
                bar.set_position(got);
            }
        }
        let mut trailer = [0u8; 32];
        recv.read_exact_into(&mut trailer).await?;
        if trailer[..] != hasher.clone().finalize()[..] {
            return Err("SHA-256 mismatch: the file was corrupted in transit".into());
        }
        file.sync_all().await.map_err(|e| format!("syncing: {e}"))?;
        Ok(())
    }
    .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let digest = hex(&hasher.finalize());
    match result {
        Ok(()) => {
            tokio::fs::rename(&partial, &dest)
                .await
                .map_err(|e| format!("moving into place: {e}"))?;
            let reply = Reply {
                ok: true,
                bytes: got,
                sha256: digest.clone(),
                error: None,
            };
            let _ = send
                .write_all(&serde_json::to_vec(&reply).expect("json"))
                .await;
            let _ = send.finish().await;
            let _ = send.stopped().await;
            Ok((dest, got, digest))
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            let reply = Reply {
                ok: false,
                bytes: got,
                sha256: digest,
                error: Some(e.clone()),
            };
            let _ = send
                .write_all(&serde_json::to_vec(&reply).expect("json"))
                .await;
            let _ = send.finish().await;
            let _ = send.stopped().await;
            Err(e)
        }
    }
}

/// Reads exactly `buf.len()` bytes or fails; used for the hash trailer.
trait ReadExactInto {
    async fn read_exact_into(&mut self, buf: &mut [u8]) -> Result<(), String>;
}

impl ReadExactInto for phoenix::RecvStream {
    async fn read_exact_into(&mut self, buf: &mut [u8]) -> Result<(), String> {
        AsyncReadExt::read_exact(self, buf)
            .await
            .map(|_| ())
            .map_err(|e| format!("reading the hash trailer: {e}"))
    }
}

pub async fn recv(
    global: &crate::common::Global,
    args: RecvArgs,
    json: bool,
) -> Result<(), CliError> {
    match std::fs::metadata(&args.out) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(CliError::input(format!(
                "--out {} is not a directory",
                args.out.display()
            )))
        }
        Err(e) => {
            return Err(CliError::input(format!(
                "--out {}: {e}",
                args.out.display()
            )))
        }
    }
    let phoenix = global.phoenix().await?;
    let listener = phoenix.listen(&args.listen).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({ "listening": listener.local_addr().to_string() })
        );
    } else {
        println!("listening on {}", listener.local_addr());
    }
    let mut received = 0u64;
    while args.count == 0 || received < args.count {
        let conn = listener.accept().await?;
        let (mut send, mut recv) = match conn.accept_stream().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("phoenix: connection from {} ended: {e}", conn.remote_addr());
                continue;
            }
        };
        match receive_one(&mut send, &mut recv, &args.out, json).await {
            Ok((path, bytes, sha)) => {
                received += 1;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"file": path, "bytes": bytes, "sha256": sha, "verified": true})
                    );
                } else {
                    println!(
                        "received {} ({bytes} bytes), SHA-256 {sha} verified",
                        path.display()
                    );
                }
            }
            Err(e) => {
                if args.count == 1 {
                    return Err(CliError::failed(format!(
                        "receiving from {}: {e}",
                        conn.remote_addr()
                    )));
                }
                eprintln!("phoenix: receiving from {}: {e}", conn.remote_addr());
            }
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), conn.closed()).await;
    }
    Ok(())
}
