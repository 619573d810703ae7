//! Archives for tests/pack_import.rs: a hand-written zip (every field under the test's control,
//! where a zip writer would refuse to lie), a deflate stream of zeros written bit by bit, and
//! small valid packs made with the zip crate.

use std::io::Write as _;

pub struct RawEntry {
    pub name: Vec<u8>,
    pub data: Vec<u8>,
    /// 0 stored, 8 deflate.
    pub method: u16,
    pub crc: u32,
    /// The uncompressed size the headers claim.
    pub size: u32,
    /// Unix mode for the external attributes (made by Unix), if any.
    pub mode: Option<u32>,
}

pub fn entry(name: &[u8], data: &[u8]) -> RawEntry {
    RawEntry {
        name: name.to_vec(),
        data: data.to_vec(),
        method: 0,
        crc: crc32(data),
        size: data.len() as u32,
        mode: None,
    }
}

pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

pub fn raw_zip(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for e in entries {
        let offset = out.len() as u32;
        let le16 = |v: &mut Vec<u8>, x: u16| v.extend_from_slice(&x.to_le_bytes());
        let le32 = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_le_bytes());
        // Local header.
        le32(&mut out, 0x0403_4b50);
        le16(&mut out, 20);
        le16(&mut out, 0);
        le16(&mut out, e.method);
        le32(&mut out, 0);
        le32(&mut out, e.crc);
        le32(&mut out, e.data.len() as u32);
        le32(&mut out, e.size);
        le16(&mut out, e.name.len() as u16);
        le16(&mut out, 0);
        out.extend_from_slice(&e.name);
        out.extend_from_slice(&e.data);
        // Central directory entry.
        le32(&mut central, 0x0201_4b50);
        le16(&mut central, 0x031E); // made by: Unix, 3.0
        le16(&mut central, 20);
        le16(&mut central, 0);
        le16(&mut central, e.method);
        le32(&mut central, 0);
        le32(&mut central, e.crc);
        le32(&mut central, e.data.len() as u32);
        le32(&mut central, e.size);
        le16(&mut central, e.name.len() as u16);
        le16(&mut central, 0);
        le16(&mut central, 0);
        le16(&mut central, 0);
        le16(&mut central, 0);
        le32(&mut central, e.mode.map_or(0, |m| m << 16));
        le32(&mut central, offset);
        central.extend_from_slice(&e.name);
    }
    let cd_offset = out.len() as u32;
    let n = entries.len() as u16;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

/// A raw deflate stream of `n` zero bytes (n ≥ 4), written directly: one fixed-Huffman block, a
/// literal 0 then matches of length 258 (and one of the rest) at distance 1. 1 GiB is ~6.5 MB.
pub fn deflated_zeros(n: u64) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u64,
        len: u32,
    }
    impl Bits {
        fn put(&mut self, v: u64, n: u32) {
            self.acc |= v << self.len;
            self.len += n;
            while self.len >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.len -= 8;
            }
        }
        /// Huffman codes go most significant bit first.
        fn code(&mut self, c: u64, n: u32) {
            let mut r = 0;
            for i in 0..n {
                r |= ((c >> i) & 1) << (n - 1 - i);
            }
            self.put(r, n);
        }
    }
    let mut b = Bits {
        out: Vec::with_capacity((n / 258 * 13 / 8 + 16) as usize),
        acc: 0,
        len: 0,
    };
    b.put(1, 1); // BFINAL
    b.put(1, 2); // fixed Huffman
    b.code(0x30, 8); // literal 0
    let mut left = n - 1;
    while left > 0 {
        let len = if left >= 258 + 3 || left == 258 {
            258
        } else if left > 258 {
            left - 3
        } else {
            left
        };
        match len {
            258 => b.code(0xC5, 8),           // code 285
            3..=10 => b.code(len - 3 + 1, 7), // codes 257..264
            _ => panic!("length {len} not handled"),
        }
        b.code(0, 5); // distance 1
        left -= len;
    }
    b.code(0, 7); // end of block
    b.put(0, 7);
    b.out
}

pub fn eco(id: &str, identity: &str) -> Vec<u8> {
    format!(r#"{{"pack_id":"{id}","pack_identity":"{identity}","version":"1.0.0"}}"#).into_bytes()
}

/// A small valid pack as a zip made by the zip crate (deflate).
pub fn good_zip(id: &str, identity: &str, block: &str) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    z.add_directory(format!("{id}/"), opts).unwrap();
    z.start_file(format!("{id}/backend/ecosystem.json"), opts)
        .unwrap();
    z.write_all(&eco(id, identity)).unwrap();
    z.start_file(format!("{id}/backend/blocks/hello.py"), opts)
        .unwrap();
    z.write_all(block.as_bytes()).unwrap();
    z.finish().unwrap().into_inner()
}

pub const BLOCK: &str = "def run(input_data, context=None):\n    return {'message': 'hello'}\n";
