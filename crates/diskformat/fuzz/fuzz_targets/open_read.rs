//! detect + open + read every guest byte + convert, on arbitrary bytes.
#![no_main]

use std::sync::Arc;

use diskformat::qcow2::Qcow2Writer;
use diskformat::{Limits, ReadAt, SliceSource};
use libfuzzer_sys::fuzz_target;

/// An owned copy of the input (`open` needs a `'static` source).
struct Owned(Vec<u8>);

impl ReadAt for Owned {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        SliceSource(&self.0).read_at(offset, buf)
    }
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_virtual_size: 16 << 20 };
    if let Ok(img) = diskformat::open(Arc::new(Owned(data.to_vec())), &limits) {
        let size = img.virtual_size();
        let mut buf = vec![0u8; 1 << 20];
        let mut pos = 0;
        while pos < size {
            let n = (size - pos).min(buf.len() as u64);
            if img.read_guest(pos, &mut buf[..n as usize]).is_err() {
                break;
            }
            pos += n;
        }
        if let Ok(mut w) = Qcow2Writer::new(Vec::new(), size, 0) {
            let _ = diskformat::convert(&*img, &mut w, &mut |_| true);
        }
    }
});
