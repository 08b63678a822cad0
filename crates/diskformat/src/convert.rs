//! The converter: any opened [`DiskImage`] into the [`Qcow2Writer`].
//!
//! Extents are walked in guest order; zero extents are skipped without
//! reading, data extents are read in 4 MiB windows into one reused buffer,
//! and each cluster that turns out to be all zeros is left unallocated.

use crate::qcow2::writer::{AppendSink, Qcow2Writer};
use crate::util::is_zero;
use crate::{DiskImage, Extent, ExtentKind, FormatError};

/// Bytes read per step (a multiple of the writer's cluster size).
const WINDOW: u64 = 4 << 20;

/// What a conversion did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConvertStats {
    /// Guest bytes covered (the virtual size when it completes).
    pub guest_bytes: u64,
    /// Guest bytes actually read from the source (data extents).
    pub bytes_read: u64,
    /// Clusters written to the qcow2.
    pub data_clusters: u64,
    /// Clusters read but found all zero, left unallocated.
    pub zero_clusters_skipped: u64,
}

/// Copy the guest disk of `img` into `writer`. `progress` is called with
/// the guest bytes done so far after every step; returning `false`
/// cancels (the error then satisfies [`FormatError::is_cancelled`]).
pub fn convert<S: AppendSink>(
    img: &dyn DiskImage,
    writer: &mut Qcow2Writer<S>,
    progress: &mut dyn FnMut(u64) -> bool,
) -> Result<ConvertStats, FormatError> {
    let vs = img.virtual_size();
    if writer.virtual_size() != vs {
        return Err(FormatError::Corrupt(format!(
            "converter: writer size {} differs from the image's {vs}",
            writer.virtual_size()
        )));
    }
    let cs = writer.cluster_size();
    let mut stats = ConvertStats::default();
    let mut buf = vec![0u8; WINDOW as usize];
    // The extent that covers the current position; each is fetched once.
    let mut cur = Extent {
        offset: 0,
        len: 0,
        kind: ExtentKind::Zero,
    };
    let fetch = |pos: u64, cur: &mut Extent| -> Result<(), FormatError> {
        if pos >= cur.offset && pos - cur.offset < cur.len {
            return Ok(());
        }
        let e = img.extent_at(pos, vs - pos)?;
        // Each step must advance, or a bad container could loop forever.
        if e.offset != pos || e.len == 0 || e.len > vs - pos {
            return Err(FormatError::Corrupt(format!(
                "container returned an invalid extent at {pos}: {e:?}"
            )));
        }
        *cur = e;
        Ok(())
    };
    let mut w = 0u64;
    while w < vs {
        fetch(w, &mut cur)?;
        if cur.kind == ExtentKind::Zero {
            let end = cur.offset + cur.len;
            let skip_to = if end >= vs { vs } else { end / cs * cs };
            if skip_to > w {
                w = skip_to;
                stats.guest_bytes = w;
                if !progress(w) {
                    return Err(FormatError::cancelled());
                }
                continue;
            }
        }
        let wend = (w + WINDOW).min(vs);
        let mut pos = w;
        while pos < wend {
            fetch(pos, &mut cur)?;
            let n = (cur.offset + cur.len).min(wend) - pos;
            let b = (pos - w) as usize;
            let slice = &mut buf[b..b + n as usize];
            match cur.kind {
                ExtentKind::Data => {
                    img.read_guest(pos, slice)?;
                    stats.bytes_read += n;
                }
                ExtentKind::Zero => slice.fill(0),
            }
            pos += n;
        }
        let mut c = w;
        while c < wend {
            let n = (wend - c).min(cs);
            let b = (c - w) as usize;
            let data = &buf[b..b + n as usize];
            if is_zero(data) {
                stats.zero_clusters_skipped += 1;
            } else {
                writer.write_cluster(c, data)?;
                stats.data_clusters += 1;
            }
            c += n;
        }
        w = wend;
        stats.guest_bytes = w;
        if !progress(w) {
            return Err(FormatError::cancelled());
        }
    }
    Ok(stats)
}
