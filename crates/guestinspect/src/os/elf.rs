//! The machine an ELF binary is built for, from its first 20 bytes.

use diskformat::bytes::{u16_be, u16_le};

/// Tencent's architecture name for an ELF `e_machine` ("x86_64", "i386",
/// "arm_64"), or the usual name of another machine; None if `head` is not
/// an ELF header.
pub fn architecture(head: &[u8]) -> Option<&'static str> {
    if head.len() < 20 || &head[0..4] != b"\x7fELF" {
        return None;
    }
    let class = head[4];
    // Too short for e_machine: not an ELF header, as for a bad magic.
    let machine = match head[5] {
        1 => u16_le(head, 18),
        2 => u16_be(head, 18),
        _ => return None,
    }
    .ok()?;
    Some(match (machine, class) {
        (62, _) => "x86_64",
        (3, _) => "i386",
        (183, _) => "arm_64",
        (40, _) => "arm",
        (243, 2) => "riscv64",
        (21, _) => "ppc64",
        (22, _) => "s390x",
        (258, _) => "loongarch64",
        (8, _) => "mips",
        _ => "unknown",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(class: u8, data: u8, machine: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[0..4].copy_from_slice(b"\x7fELF");
        h[4] = class;
        h[5] = data;
        let m = if data == 1 {
            machine.to_le_bytes()
        } else {
            machine.to_be_bytes()
        };
        h[18..20].copy_from_slice(&m);
        h
    }

    #[test]
    fn machines() {
        assert_eq!(architecture(&header(2, 1, 62)), Some("x86_64"));
        assert_eq!(architecture(&header(1, 1, 3)), Some("i386"));
        assert_eq!(architecture(&header(2, 1, 183)), Some("arm_64"));
        assert_eq!(architecture(&header(2, 2, 22)), Some("s390x"));
        assert_eq!(architecture(b"#!/bin/sh\n echo hello there"), None);
        assert_eq!(architecture(&header(2, 3, 62)), None);
    }
}
