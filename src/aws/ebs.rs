//! EBS snapshots through the EBS direct APIs, as block traits:
//! - [`EbsSnapshotSource`] reads a snapshot lazily. ListSnapshotBlocks (paginated) says which
//!   512 KiB blocks exist (the rest are zeros); each block is fetched at most once per run,
//!   its SHA-256 checked, and kept in a sparse cache file in the work directory, not in RAM.
//!   A read that spans several missing blocks fetches them concurrently, and
//!   [`BlockSource::prefetch`] fetches ranges ahead, up to `concurrency` requests in flight.
//! - [`ChildSnapshotSink`] writes the in-place result as an incremental child of the source
//!   snapshot: only blocks that differ from the parent are put, at commit.
//! - [`upload_image`] uploads every non-zero block of a staged local image to a new snapshot
//!   with no parent (the partitioned layouts).

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_ebs::primitives::ByteStream;
use aws_sdk_ebs::types::{ChecksumAlgorithm, Tag};
use base64::Engine;
use sha2::{Digest, Sha256};

use super::AwsError;
use super::retry::{Policy, with_policy, with_retries};
use crate::io::wrappers::CopyError;
use crate::io::{BlockSink, BlockSource, BlockWrite};
use crate::progress::Progress;

/// The EBS direct block size.
pub const BLOCK: u64 = 512 * 1024;

/// How many requests a transfer keeps in flight by default.
pub const DEFAULT_CONCURRENCY: usize = 64;

fn b64_sha256(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(data))
}

fn io_err(e: AwsError) -> io::Error {
    io::Error::other(e)
}

/// The blocks one transfer moved, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct Transfer {
    pub blocks: AtomicU64,
}

impl Transfer {
    pub fn blocks(&self) -> u64 {
        self.blocks.load(Ordering::Relaxed)
    }
}

/// A snapshot read through GetSnapshotBlock.
pub struct EbsSnapshotSource {
    ebs: aws_sdk_ebs::Client,
    rt: tokio::runtime::Handle,
    snapshot_id: String,
    len: u64,
    /// Block index → token, for the blocks the snapshot holds.
    tokens: BTreeMap<i32, String>,
    cache: File,
    fetched: Mutex<Vec<bool>>,
    concurrency: usize,
    pub fetches: Arc<Transfer>,
}

impl EbsSnapshotSource {
    /// Lists the snapshot's blocks and opens a cache file under `work_dir`.
    pub fn open(
        aws: &super::Aws,
        snapshot_id: &str,
        work_dir: &Path,
        concurrency: usize,
    ) -> Result<EbsSnapshotSource, AwsError> {
        let (tokens, len) = aws.block_on(list_blocks(&aws.ebs, snapshot_id))?;
        std::fs::create_dir_all(work_dir)
            .map_err(|e| AwsError::Other(format!("creating the work directory {}: {e}", work_dir.display())))?;
        // An unnamed file: the cache goes away with the process, whatever happens.
        let cache = tempfile::tempfile_in(work_dir)
            .map_err(|e| AwsError::Other(format!("creating a block cache in {}: {e}", work_dir.display())))?;
        cache.set_len(len).map_err(|e| AwsError::Other(format!("sizing the block cache: {e}")))?;
        let blocks = len.div_ceil(BLOCK) as usize;
        Ok(EbsSnapshotSource {
            ebs: aws.ebs.clone(),
            rt: aws.handle(),
            snapshot_id: snapshot_id.to_string(),
            len,
            tokens,
            cache,
            fetched: Mutex::new(vec![false; blocks]),
            concurrency: concurrency.max(1),
            fetches: Arc::new(Transfer::default()),
        })
    }

    /// Blocks the snapshot holds.
    pub fn stored_blocks(&self) -> usize {
        self.tokens.len()
    }

    /// Fetches every block in `indices` not yet cached, `concurrency` at a time.
    fn ensure(&self, indices: impl Iterator<Item = i32>) -> io::Result<()> {
        let mut fetched = self.fetched.lock().map_err(|_| io::Error::other("block cache lock poisoned"))?;
        let wanted: Vec<(i32, String)> = indices
            .filter(|i| !fetched[*i as usize])
            .filter_map(|i| self.tokens.get(&i).map(|t| (i, t.clone())))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        // Each block goes to the cache as it arrives: at most `concurrency` are in memory.
        let mut store = |index: i32, data: Vec<u8>| -> io::Result<()> {
            self.cache.write_all_at(&data, index as u64 * BLOCK)?;
            fetched[index as usize] = true;
            self.fetches.blocks.fetch_add(1, Ordering::Relaxed);
            Ok(())
        };
        self.rt.block_on(fetch_all(&self.ebs, &self.snapshot_id, wanted, self.concurrency, &mut store))?;
        Ok(())
    }

    fn indices(&self, range: Range<u64>) -> Range<i32> {
        let end = range.end.min(self.len);
        if range.start >= end {
            return 0..0;
        }
        (range.start / BLOCK) as i32..end.div_ceil(BLOCK) as i32
    }
}

impl BlockSource for EbsSnapshotSource {
    fn describe(&self) -> String {
        self.snapshot_id.clone()
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).filter(|&e| e <= self.len).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read at {offset} is past the end of {}", self.snapshot_id),
            )
        })?;
        self.ensure(self.indices(offset..end))?;
        // Blocks the snapshot does not hold are holes in the cache file: zeros.
        self.cache.read_exact_at(buf, offset)
    }
    fn data_ranges(&self) -> io::Result<Vec<Range<u64>>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        for &i in self.tokens.keys() {
            let r = i as u64 * BLOCK..((i as u64 + 1) * BLOCK).min(self.len);
            match out.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => out.push(r),
            }
        }
        Ok(out)
    }
    fn prefetch(&self, ranges: &[Range<u64>]) -> io::Result<()> {
        let mut all: Vec<i32> = ranges.iter().flat_map(|r| self.indices(r.clone())).collect();
        all.sort_unstable();
        all.dedup();
        self.ensure(all.into_iter())
    }
}

/// A 64 TiB volume at 10,000 blocks a page needs 13,422 pages; empty pages come on top.
const MAX_LIST_PAGES: u32 = 1_000_000;

/// Every block of a snapshot (index → token) and the volume size in bytes.
async fn list_blocks(ebs: &aws_sdk_ebs::Client, snapshot_id: &str) -> Result<(BTreeMap<i32, String>, u64), AwsError> {
    let mut tokens = BTreeMap::new();
    let mut next: Option<String> = None;
    let mut size_gib = 0i64;
    let mut pages = 0u32;
    loop {
        // Pages may be short or empty and still carry a token (the EBS API reference): follow
        // them to the end, but not forever on a service that keeps answering the same token.
        pages += 1;
        if pages > MAX_LIST_PAGES {
            return Err(AwsError::Other(format!("{snapshot_id}: more than {MAX_LIST_PAGES} pages of blocks")));
        }
        let token = next.take();
        let out = with_retries(
            || format!("listing the blocks of {snapshot_id}"),
            || {
                ebs.list_snapshot_blocks()
                    .snapshot_id(snapshot_id)
                    .max_results(10_000)
                    .set_next_token(token.clone())
                    .send()
            },
        )
        .await?;
        if let Some(bs) = out.block_size()
            && bs as u64 != BLOCK
        {
            return Err(AwsError::Other(format!("{snapshot_id}: block size {bs}, expected {BLOCK}")));
        }
        size_gib = out.volume_size().unwrap_or(size_gib);
        for b in out.blocks() {
            if let (Some(i), Some(t)) = (b.block_index(), b.block_token()) {
                tokens.insert(i, t.to_string());
            }
        }
        match out.next_token() {
            Some(t) if !t.is_empty() && Some(t) != token.as_deref() => next = Some(t.to_string()),
            Some(t) if !t.is_empty() => {
                return Err(AwsError::Other(format!("{snapshot_id}: the block listing repeated its page token")));
            }
            _ => break,
        }
    }
    if size_gib <= 0 {
        return Err(AwsError::Other(format!("{snapshot_id}: the service reported no volume size")));
    }
    Ok((tokens, size_gib as u64 * (1 << 30)))
}

/// Fetches the blocks in `wanted`, `concurrency` at a time, handing each to `store` as it
/// arrives; stops at the first failure.
async fn fetch_all(
    ebs: &aws_sdk_ebs::Client,
    snapshot_id: &str,
    wanted: Vec<(i32, String)>,
    concurrency: usize,
    store: &mut dyn FnMut(i32, Vec<u8>) -> io::Result<()>,
) -> io::Result<()> {
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, token) in wanted {
        let ebs = ebs.clone();
        let id = snapshot_id.to_string();
        let sem = Arc::clone(&sem);
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await.map_err(|e| AwsError::Other(e.to_string()))?;
            get_block(&ebs, &id, index, &token).await.map(|d| (index, d))
        });
    }
    while let Some(r) = tasks.join_next().await {
        let (index, data) = r.map_err(|e| io::Error::other(format!("a block fetch failed: {e}")))?.map_err(io_err)?;
        store(index, data)?;
    }
    Ok(())
}

/// How many times a block whose body fails its SHA-256 (or breaks off) is fetched again.
const REFETCHES: u32 = 3;

async fn get_block(ebs: &aws_sdk_ebs::Client, snapshot_id: &str, index: i32, token: &str) -> Result<Vec<u8>, AwsError> {
    let what = || format!("fetching block {index} of {snapshot_id}");
    let mut attempt = 1;
    loop {
        let out = with_retries(what, || {
            ebs.get_snapshot_block().snapshot_id(snapshot_id).block_index(index).block_token(token).send()
        })
        .await?;
        let expected = out.checksum().map(str::to_string);
        // A body that breaks off or does not match its checksum is never used: it is fetched
        // again (coldsnap does the same), and only a repeated failure fails the read.
        let fault = match out.block_data.collect().await {
            Err(e) => format!("reading the body: {e}"),
            Ok(body) => {
                let data = body.into_bytes().to_vec();
                match expected.filter(|s| !s.is_empty()) {
                    _ if data.len() as u64 != BLOCK => format!("{} bytes, expected {BLOCK}", data.len()),
                    None => format!("the service sent no checksum for block {index}"),
                    Some(sum) if sum != b64_sha256(&data) => "the SHA-256 checksum does not match the data".into(),
                    Some(_) => return Ok(data),
                }
            }
        };
        if attempt > REFETCHES {
            return Err(AwsError::Other(format!("{}: {fault} (after {attempt} fetches)", what())));
        }
        tracing::debug!(call = %what(), attempt, %fault, "fetching the block again");
        tokio::time::sleep(super::retry::jittered(std::time::Duration::from_millis(200 << attempt))).await;
        attempt += 1;
    }
}

/// What a new snapshot is: its parent or encryption, size, tags and idempotency token.
#[derive(Clone, Debug)]
pub struct NewSnapshot {
    pub parent: Option<String>,
    /// Without a parent: encrypt with this key (`Some(None)`: the account's default key).
    pub encrypt: Option<Option<String>>,
    pub size_gib: i64,
    pub description: String,
    pub tags: Vec<(String, String)>,
    pub client_token: String,
}

/// Gives the 512 KiB block at an index, or `None` when it is all zeros and need not be put.
/// Called as each upload starts, so only `concurrency` blocks are in memory at once.
pub type BlockReader = Arc<dyn Fn(i32) -> Result<Option<bytes::Bytes>, AwsError> + Send + Sync>;

/// Starts a snapshot, puts the blocks at `indices` (read by `read` as each upload starts)
/// `concurrency` at a time, and completes it with the count put. Returns the snapshot id; the
/// caller waits for it to be completed.
pub async fn write_snapshot(
    ebs: &aws_sdk_ebs::Client,
    new: &NewSnapshot,
    indices: Vec<i32>,
    read: BlockReader,
    concurrency: usize,
    uploads: &Transfer,
) -> Result<String, AwsError> {
    let mut start = ebs
        .start_snapshot()
        .volume_size(new.size_gib)
        .description(&new.description)
        .client_token(&new.client_token)
        .timeout(60);
    if let Some(p) = &new.parent {
        // A child inherits its parent's encryption; Encrypted cannot be passed with a parent.
        start = start.parent_snapshot_id(p);
    } else if let Some(key) = &new.encrypt {
        start = start.encrypted(true).set_kms_key_arn(key.clone());
    }
    for (k, v) in &new.tags {
        start = start.tags(Tag::builder().key(k).value(v).build());
    }
    // The client token makes a repeated start return the same snapshot.
    let id = with_policy(Policy::START_SNAPSHOT, || "starting the new snapshot".to_string(), || start.clone().send())
        .await?
        .snapshot_id()
        .map(str::to_string)
        .ok_or_else(|| AwsError::Other("StartSnapshot returned no snapshot id".into()))?;
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for index in indices {
        let ebs = ebs.clone();
        let id = id.clone();
        let sem = Arc::clone(&sem);
        let read = Arc::clone(&read);
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await.map_err(|e| AwsError::Other(e.to_string()))?;
            let Some(data) = read(index)? else { return Ok(0) };
            let len = data.len();
            let sum = b64_sha256(&data);
            with_policy(
                Policy::PUT_BLOCK,
                || format!("putting block {index} of {id}"),
                || {
                    ebs.put_snapshot_block()
                        .snapshot_id(&id)
                        .block_index(index)
                        .checksum(&sum)
                        .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
                        .data_length(len as i32)
                        .block_data(ByteStream::from(data.clone()))
                        .send()
                },
            )
            .await?;
            Ok::<usize, AwsError>(len)
        });
    }
    let mut count = 0;
    while let Some(r) = tasks.join_next().await {
        let len = r.map_err(|e| AwsError::Other(format!("a block upload failed: {e}")))??;
        if len > 0 {
            count += 1;
            uploads.blocks.fetch_add(1, Ordering::Relaxed);
        }
    }
    with_retries(
        || format!("completing {id}"),
        || ebs.complete_snapshot().snapshot_id(&id).changed_blocks_count(count).send(),
    )
    .await?;
    Ok(id)
}

/// The in-place result as a child of the source snapshot: writes are gathered per 512 KiB
/// block over the parent's bytes, and at commit the blocks that differ from the parent are
/// put to a new snapshot whose parent is the source. Nothing exists in AWS before the commit.
pub struct ChildSnapshotSink {
    ebs: aws_sdk_ebs::Client,
    rt: tokio::runtime::Handle,
    parent: Arc<dyn BlockSource>,
    new: NewSnapshot,
    dirty: BTreeMap<i32, Vec<u8>>,
    concurrency: usize,
    pub uploads: Arc<Transfer>,
    /// The new snapshot's id, once committed.
    pub result: Arc<Mutex<Option<String>>>,
}

impl ChildSnapshotSink {
    pub fn new(aws: &super::Aws, parent: Arc<dyn BlockSource>, new: NewSnapshot, concurrency: usize) -> Self {
        ChildSnapshotSink {
            ebs: aws.ebs.clone(),
            rt: aws.handle(),
            parent,
            new,
            dirty: BTreeMap::new(),
            concurrency,
            uploads: Arc::new(Transfer::default()),
            result: Arc::new(Mutex::new(None)),
        }
    }
}

impl BlockWrite for ChildSnapshotSink {
    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let end = offset + buf.len() as u64;
        if end > self.parent.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("write at {offset} is past the volume's end"),
            ));
        }
        let mut at = offset;
        while at < end {
            let index = (at / BLOCK) as i32;
            let block_start = index as u64 * BLOCK;
            let n = ((block_start + BLOCK).min(end) - at) as usize;
            let block = match self.dirty.entry(index) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    let mut b = vec![0u8; BLOCK as usize];
                    let have = (self.parent.len() - block_start).min(BLOCK) as usize;
                    self.parent.read_exact_at(block_start, &mut b[..have])?;
                    v.insert(b)
                }
            };
            let from = (at - offset) as usize;
            let into = (at - block_start) as usize;
            block[into..into + n].copy_from_slice(&buf[from..from + n]);
            at += n as u64;
        }
        Ok(())
    }
}

impl BlockSink for ChildSnapshotSink {
    fn describe(&self) -> String {
        format!("a new child snapshot of {}", self.parent.describe())
    }
    fn disk_size(&self) -> u64 {
        self.parent.len()
    }
    fn local_image(&self) -> Option<&Path> {
        None
    }
    fn copy_from(
        &mut self,
        source: &dyn BlockSource,
        src_off: u64,
        len: u64,
        dst_off: u64,
        _progress: &dyn Progress,
    ) -> Result<u64, CopyError> {
        // The child starts as its parent: copying the parent's bytes onto themselves moves
        // nothing. Anything else is not what this sink is for.
        if src_off == dst_off && source.describe() == self.parent.describe() {
            return Ok(0);
        }
        Err(CopyError::Write {
            offset: dst_off,
            err: io::Error::new(
                io::ErrorKind::Unsupported,
                format!("a child snapshot of {} cannot take a shifted copy ({len} bytes)", self.parent.describe()),
            ),
        })
    }
    fn commit(self: Box<Self>) -> io::Result<()> {
        let mut changed = BTreeMap::new();
        for (index, data) in self.dirty {
            let start = index as u64 * BLOCK;
            let mut base = vec![0u8; BLOCK as usize];
            let have = (self.parent.len() - start).min(BLOCK) as usize;
            self.parent.read_exact_at(start, &mut base[..have])?;
            if base != data {
                changed.insert(index, bytes::Bytes::from(data));
            }
        }
        let indices: Vec<i32> = changed.keys().copied().collect();
        let changed = Arc::new(changed);
        let read: BlockReader = Arc::new(move |i| Ok(changed.get(&i).cloned()));
        let id = self
            .rt
            .block_on(write_snapshot(&self.ebs, &self.new, indices, read, self.concurrency, &self.uploads))
            .map_err(io_err)?;
        *self.result.lock().map_err(|_| io::Error::other("result lock poisoned"))? = Some(id);
        Ok(())
    }
}

/// Uploads every non-zero 512 KiB block of the local image `path` to a new snapshot, reading
/// each block as its upload starts.
pub fn upload_image(
    aws: &super::Aws,
    path: &Path,
    new: &NewSnapshot,
    concurrency: usize,
    uploads: &Transfer,
) -> Result<String, AwsError> {
    let src = Arc::new(
        crate::io::LocalFileSource::open(path)
            .map_err(|e| AwsError::Other(format!("opening the staged image {}: {e}", path.display())))?,
    );
    let ranges = src.data_ranges().map_err(|e| AwsError::Other(format!("{}: {e}", path.display())))?;
    let mut indices: Vec<i32> =
        ranges.iter().flat_map(|r| (r.start / BLOCK) as i32..r.end.div_ceil(BLOCK) as i32).collect();
    indices.dedup();
    let shown = path.display().to_string();
    let read: BlockReader = Arc::new(move |i| {
        let start = i as u64 * BLOCK;
        let mut b = vec![0u8; BLOCK as usize];
        let have = (src.len() - start).min(BLOCK) as usize;
        src.read_exact_at(start, &mut b[..have]).map_err(|e| AwsError::Other(format!("reading {shown}: {e}")))?;
        Ok(b.iter().any(|&x| x != 0).then(|| bytes::Bytes::from(b)))
    });
    aws.block_on(write_snapshot(&aws.ebs, new, indices, read, concurrency, uploads))
}

#[cfg(test)]
mod tests {
    #[test]
    fn checksums_are_base64_sha256() {
        assert_eq!(super::b64_sha256(b""), "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
    }
}
