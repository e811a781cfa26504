//! A minimal EBS direct endpoint for the benchmark: one snapshot served from memory and new
//! snapshots whose blocks are checked and dropped, every request held `latency` before it is
//! answered. A thread per connection and almost no work per request, so the pipeline, not the
//! server, sets the pace. It speaks just enough of the REST protocol for pv2hvm's EBS code.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use sha2::{Digest, Sha256};

const BLOCK: usize = 524_288;
pub const SNAPSHOT: &str = "snap-0fakeb5";

struct Served {
    image: std::fs::File,
    /// (index, base64 SHA-256) of every non-zero block; the data is read as it is asked for.
    blocks: Vec<(u64, String)>,
    volume_gib: u64,
    latency: Duration,
    next: AtomicU64,
}

/// Serves the non-zero blocks of `image` as snapshot [`SNAPSHOT`] on 127.0.0.1; returns the
/// endpoint URL. The server lives as long as the process.
pub fn serve(image: &std::path::Path, latency: Duration) -> std::io::Result<String> {
    let file = std::fs::File::open(image)?;
    let len = file.metadata()?.len();
    let mut blocks = Vec::new();
    let mut buf = vec![0u8; BLOCK];
    for index in 0..len.div_ceil(BLOCK as u64) {
        read_block(&file, len, index, &mut buf)?;
        if buf.iter().any(|&b| b != 0) {
            blocks.push((index, base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&buf))));
        }
    }
    let volume_gib = len.div_ceil(1 << 30);
    let served = Arc::new(Served { image: file, blocks, volume_gib, latency, next: AtomicU64::new(1) });
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}", listener.local_addr()?);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let served = Arc::clone(&served);
            std::thread::spawn(move || {
                let _ = connection(stream, &served);
            });
        }
    });
    Ok(url)
}

/// Reads block `index` of the `len`-byte image into `buf`, zeros past its end.
fn read_block(file: &std::fs::File, len: u64, index: u64, buf: &mut [u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    buf.fill(0);
    let want = len.saturating_sub(index * BLOCK as u64).min(BLOCK as u64) as usize;
    file.read_exact_at(&mut buf[..want], index * BLOCK as u64)
}

/// Answers requests on one keep-alive connection until the client closes it.
fn connection(stream: TcpStream, s: &Served) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let mut body = vec![0u8; header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0)];
        reader.read_exact(&mut body)?;
        std::thread::sleep(s.latency);
        let path = target.split('?').next().unwrap_or("");
        let seg: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method.as_str(), seg.as_slice()) {
            ("GET", ["snapshots", _, "blocks"]) => {
                let list: Vec<String> =
                    s.blocks.iter().map(|(i, _)| format!("{{\"BlockIndex\":{i},\"BlockToken\":\"t{i}\"}}")).collect();
                let json = format!(
                    "{{\"Blocks\":[{}],\"VolumeSize\":{},\"BlockSize\":{BLOCK}}}",
                    list.join(","),
                    s.volume_gib
                );
                respond(&mut out, 200, &[("content-type", "application/json".into())], json.as_bytes())?;
            }
            ("GET", ["snapshots", _, "blocks", index]) => {
                let index: u64 = index.parse().unwrap_or(u64::MAX);
                match s.blocks.binary_search_by_key(&index, |b| b.0) {
                    Ok(at) => {
                        let sum = &s.blocks[at].1;
                        let mut data = vec![0u8; BLOCK];
                        read_block(&s.image, s.image.metadata()?.len(), index, &mut data)?;
                        let headers = [
                            ("content-type", "application/octet-stream".to_string()),
                            ("x-amz-data-length", BLOCK.to_string()),
                            ("x-amz-checksum", sum.clone()),
                            ("x-amz-checksum-algorithm", "SHA256".into()),
                        ];
                        respond(&mut out, 200, &headers, &data)?;
                    }
                    Err(_) => validation(&mut out, "no such block")?,
                }
            }
            ("POST", ["snapshots"]) => {
                let id = format!("snap-0new{:08x}", s.next.fetch_add(1, Ordering::Relaxed));
                let json = format!(
                    "{{\"SnapshotId\":\"{id}\",\"Status\":\"pending\",\"BlockSize\":{BLOCK},\"VolumeSize\":{}}}",
                    s.volume_gib
                );
                respond(&mut out, 201, &[("content-type", "application/json".into())], json.as_bytes())?;
            }
            ("PUT", ["snapshots", _, "blocks", _]) => {
                let sum = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&body));
                if body.len() != BLOCK || header("x-amz-checksum") != Some(sum.as_str()) {
                    validation(&mut out, "the checksum does not match the data")?;
                } else {
                    let headers = [("x-amz-checksum", sum), ("x-amz-checksum-algorithm", "SHA256".to_string())];
                    respond(&mut out, 201, &headers, b"")?;
                }
            }
            ("POST", ["snapshots", "completion", _]) => {
                respond(&mut out, 202, &[("content-type", "application/json".into())], b"{\"Status\":\"completed\"}")?;
            }
            _ => validation(&mut out, "not served by the benchmark endpoint")?,
        }
    }
}

fn validation(out: &mut TcpStream, why: &str) -> std::io::Result<()> {
    let json = format!("{{\"Message\":\"{why}\",\"Reason\":\"INVALID_PARAMETER_VALUE\"}}");
    let headers =
        [("content-type", "application/json".to_string()), ("x-amzn-errortype", "ValidationException".to_string())];
    respond(out, 400, &headers, json.as_bytes())
}

fn respond(out: &mut TcpStream, status: u16, headers: &[(&str, String)], body: &[u8]) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(body)?;
    out.flush()
}
