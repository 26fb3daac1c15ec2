use std::io::Cursor;

use x509_parser::pem::Pem;

use super::crypto_ccm::*;
use super::*;
use crate::content::ContentType;
use crate::record_layer::record_layer_header::{ProtocolVersion, RECORD_LAYER_HEADER_SIZE};

const RAW_PRIVATE_KEY: &str = "
-----BEGIN RSA PRIVATE KEY-----
MIIEowIBAAKCAQEAxIA2BrrnR2sIlATsp7aRBD/3krwZ7vt9dNeoDQAee0s6SuYP
6MBx/HPnAkwNvPS90R05a7pwRkoT6Ur4PfPhCVlUe8lV+0Eto3ZSEeHz3HdsqlM3
bso67L7Dqrc7MdVstlKcgJi8yeAoGOIL9/igOv0XBFCeznm9nznx6mnsR5cugw+1
ypXelaHmBCLV7r5SeVSh57+KhvZGbQ2fFpUaTPegRpJZXBNS8lSeWvtOv9d6N5UB
ROTAJodMZT5AfX0jB0QB9IT/0I96H6BSENH08NXOeXApMuLKvnAf361rS7cRAfRL
rWZqERMP4u6Cnk0Cnckc3WcW27kGGIbtwbqUIQIDAQABAoIBAGF7OVIdZp8Hejn0
N3L8HvT8xtUEe9kS6ioM0lGgvX5s035Uo4/T6LhUx0VcdXRH9eLHnLTUyN4V4cra
ZkxVsE3zAvZl60G6E+oDyLMWZOP6Wu4kWlub9597A5atT7BpMIVCdmFVZFLB4SJ3
AXkC3nplFAYP+Lh1rJxRIrIn2g+pEeBboWbYA++oDNuMQffDZaokTkJ8Bn1JZYh0
xEXKY8Bi2Egd5NMeZa1UFO6y8tUbZfwgVs6Enq5uOgtfayq79vZwyjj1kd29MBUD
8g8byV053ZKxbUOiOuUts97eb+fN3DIDRTcT2c+lXt/4C54M1FclJAbtYRK/qwsl
pYWKQAECgYEA4ZUbqQnTo1ICvj81ifGrz+H4LKQqe92Hbf/W51D/Umk2kP702W22
HP4CvrJRtALThJIG9m2TwUjl/WAuZIBrhSAbIvc3Fcoa2HjdRp+sO5U1ueDq7d/S
Z+PxRI8cbLbRpEdIaoR46qr/2uWZ943PHMv9h4VHPYn1w8b94hwD6vkCgYEA3v87
mFLzyM9ercnEv9zHMRlMZFQhlcUGQZvfb8BuJYl/WogyT6vRrUuM0QXULNEPlrin
mBQTqc1nCYbgkFFsD2VVt1qIyiAJsB9MD1LNV6YuvE7T2KOSadmsA4fa9PUqbr71
hf3lTTq+LeR09LebO7WgSGYY+5YKVOEGpYMR1GkCgYEAxPVQmk3HKHEhjgRYdaG5
lp9A9ZE8uruYVJWtiHgzBTxx9TV2iST+fd/We7PsHFTfY3+wbpcMDBXfIVRKDVwH
BMwchXH9+Ztlxx34bYJaegd0SmA0Hw9ugWEHNgoSEmWpM1s9wir5/ELjc7dGsFtz
uzvsl9fpdLSxDYgAAdzeGtkCgYBAzKIgrVox7DBzB8KojhtD5ToRnXD0+H/M6OKQ
srZPKhlb0V/tTtxrIx0UUEFLlKSXA6mPw6XDHfDnD86JoV9pSeUSlrhRI+Ysy6tq
eIE7CwthpPZiaYXORHZ7wCqcK/HcpJjsCs9rFbrV0yE5S3FMdIbTAvgXg44VBB7O
UbwIoQKBgDuY8gSrA5/A747wjjmsdRWK4DMTMEV4eCW1BEP7Tg7Cxd5n3xPJiYhr
nhLGN+mMnVIcv2zEMS0/eNZr1j/0BtEdx+3IC6Eq+ONY0anZ4Irt57/5QeKgKn/L
JPhfPySIPG4UmwE4gW8t79vfOKxnUu2fDD1ZXUYopan6EckACNH/
-----END RSA PRIVATE KEY-----
";

#[test]
fn test_generate_key_signature() -> Result<()> {
    let reader = Cursor::new(RAW_PRIVATE_KEY.as_bytes());
    let pem = match Pem::read(reader) {
        Ok((pem, _)) => pem,
        Err(_) => return Err(Error::Other("Pem::read error".to_owned())),
    };
    //let private_key = rsa::RSAPrivateKey::from_pkcs1(&pem.contents)?;

    let client_random = vec![
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
        0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d,
        0x1e, 0x1f,
    ];
    let server_random = vec![
        0x70, 0x71, 0x72, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x7b, 0x7c, 0x7d, 0x7e,
        0x7f, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8b, 0x8c, 0x8d,
        0x8e, 0x8f,
    ];
    let public_key = vec![
        0x20, 0x9f, 0xd7, 0xad, 0x6d, 0xcf, 0xf4, 0x29, 0x8d, 0xd3, 0xf9, 0x6d, 0x5b, 0x1b, 0x2a,
        0xf9, 0x10, 0xa0, 0x53, 0x5b, 0x14, 0x88, 0xd7, 0xf8, 0xfa, 0xbb, 0x34, 0x9a, 0x98, 0x28,
        0x80, 0xb6, 0x15,
    ];
    let expected_signature = vec![
        0x6f, 0x47, 0x97, 0x85, 0xcc, 0x76, 0x50, 0x93, 0xbd, 0xe2, 0x6a, 0x69, 0x0b, 0xc3, 0x03,
        0xd1, 0xb7, 0xe4, 0xab, 0x88, 0x7b, 0xa6, 0x52, 0x80, 0xdf, 0xaa, 0x25, 0x7a, 0xdb, 0x29,
        0x32, 0xe4, 0xd8, 0x28, 0x28, 0xb3, 0xe8, 0x04, 0x3c, 0x38, 0x16, 0xfc, 0x78, 0xe9, 0x15,
        0x7b, 0xc5, 0xbd, 0x7d, 0xfc, 0xcd, 0x83, 0x00, 0x57, 0x4a, 0x3c, 0x23, 0x85, 0x75, 0x6b,
        0x37, 0xd5, 0x89, 0x72, 0x73, 0xf0, 0x44, 0x8c, 0x00, 0x70, 0x1f, 0x6e, 0xa2, 0x81, 0xd0,
        0x09, 0xc5, 0x20, 0x36, 0xab, 0x23, 0x09, 0x40, 0x1f, 0x4d, 0x45, 0x96, 0x62, 0xbb, 0x81,
        0xb0, 0x30, 0x72, 0xad, 0x3a, 0x0a, 0xac, 0x31, 0x63, 0x40, 0x52, 0x0a, 0x27, 0xf3, 0x34,
        0xde, 0x27, 0x7d, 0xb7, 0x54, 0xff, 0x0f, 0x9f, 0x5a, 0xfe, 0x07, 0x0f, 0x4e, 0x9f, 0x53,
        0x04, 0x34, 0x62, 0xf4, 0x30, 0x74, 0x83, 0x35, 0xfc, 0xe4, 0x7e, 0xbf, 0x5a, 0xc4, 0x52,
        0xd0, 0xea, 0xf9, 0x61, 0x4e, 0xf5, 0x1c, 0x0e, 0x58, 0x02, 0x71, 0xfb, 0x1f, 0x34, 0x55,
        0xe8, 0x36, 0x70, 0x3c, 0xc1, 0xcb, 0xc9, 0xb7, 0xbb, 0xb5, 0x1c, 0x44, 0x9a, 0x6d, 0x88,
        0x78, 0x98, 0xd4, 0x91, 0x2e, 0xeb, 0x98, 0x81, 0x23, 0x30, 0x73, 0x39, 0x43, 0xd5, 0xbb,
        0x70, 0x39, 0xba, 0x1f, 0xdb, 0x70, 0x9f, 0x91, 0x83, 0x56, 0xc2, 0xde, 0xed, 0x17, 0x6d,
        0x2c, 0x3e, 0x21, 0xea, 0x36, 0xb4, 0x91, 0xd8, 0x31, 0x05, 0x60, 0x90, 0xfd, 0xc6, 0x74,
        0xa9, 0x7b, 0x18, 0xfc, 0x1c, 0x6a, 0x1c, 0x6e, 0xec, 0xd3, 0xc1, 0xc0, 0x0d, 0x11, 0x25,
        0x48, 0x37, 0x3d, 0x45, 0x11, 0xa2, 0x31, 0x14, 0x0a, 0x66, 0x9f, 0xd8, 0xac, 0x74, 0xa2,
        0xcd, 0xc8, 0x79, 0xb3, 0x9e, 0xc6, 0x66, 0x25, 0xcf, 0x2c, 0x87, 0x5e, 0x5c, 0x36, 0x75,
        0x86,
    ];

    let signature = generate_key_signature(
        &client_random,
        &server_random,
        &public_key,
        NamedCurve::X25519,
        &CryptoPrivateKey {
            kind: CryptoPrivateKeyKind::Rsa256(
                ring::rsa::KeyPair::from_der(&pem.contents)
                    .map_err(|e| Error::Other(e.to_string()))?,
            ),
            serialized_der: pem.contents.clone(),
        }, //hashAlgorithmSHA256,
    )?;

    assert_eq!(
        signature, expected_signature,
        "Signature generation failed \nexp {expected_signature:?} \nactual {signature:?} "
    );

    Ok(())
}

#[test]
fn test_ccm_encryption_and_decryption() -> Result<()> {
    let key = vec![
        0x18, 0x78, 0xac, 0xc2, 0x2a, 0xd8, 0xbd, 0xd8, 0xc6, 0x01, 0xa6, 0x17, 0x12, 0x6f, 0x63,
        0x54,
    ];
    let iv = vec![0x0e, 0xb2, 0x09, 0x06];

    let ccm = CryptoCcm::new(&CryptoCcmTagLen::CryptoCcmTagLength, &key, &iv, &key, &iv);

    let rlh = RecordLayerHeader {
        content_type: ContentType::ApplicationData,
        protocol_version: ProtocolVersion {
            major: 0xfe,
            minor: 0xff,
        },
        epoch: 0,
        sequence_number: 18,
        content_len: 3,
    };

    let raw = vec![
        0x17, 0xfe, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x12, 0x00, 0x03, 0xff, 0xaa,
        0xbb,
    ];

    let cipher_text = ccm.encrypt(&rlh, &raw)?;

    assert_eq!(
        &cipher_text[RECORD_LAYER_HEADER_SIZE - 2..RECORD_LAYER_HEADER_SIZE],
        [0, 27],
        "RecordLayer size updating failed \nexp: {:?} \nactual {:?} ",
        [0, 27],
        &cipher_text[RECORD_LAYER_HEADER_SIZE - 2..RECORD_LAYER_HEADER_SIZE]
    );

    let plain_text = ccm.decrypt(&cipher_text)?;

    assert_eq!(
        raw[RECORD_LAYER_HEADER_SIZE..],
        plain_text[RECORD_LAYER_HEADER_SIZE..],
        "Decryption failed \nexp: {:?} \nactual {:?} ",
        &raw[RECORD_LAYER_HEADER_SIZE..],
        &plain_text[RECORD_LAYER_HEADER_SIZE..]
    );

    Ok(())
}

#[test]
fn test_certificate_verify() -> Result<()> {
    let plain_text: Vec<u8> = vec![
        0x6f, 0x47, 0x97, 0x85, 0xcc, 0x76, 0x50, 0x93, 0xbd, 0xe2, 0x6a, 0x69, 0x0b, 0xc3, 0x03,
        0xd1, 0xb7, 0xe4, 0xab, 0x88, 0x7b, 0xa6, 0x52, 0x80, 0xdf, 0xaa, 0x25, 0x7a, 0xdb, 0x29,
        0x32, 0xe4, 0xd8, 0x28, 0x28, 0xb3, 0xe8, 0x04, 0x3c, 0x38, 0x16, 0xfc, 0x78, 0xe9, 0x15,
        0x7b, 0xc5, 0xbd, 0x7d, 0xfc, 0xcd, 0x83, 0x00, 0x57, 0x4a, 0x3c, 0x23, 0x85, 0x75, 0x6b,
        0x37, 0xd5, 0x89, 0x72, 0x73, 0xf0, 0x44, 0x8c, 0x00, 0x70, 0x1f, 0x6e, 0xa2, 0x81, 0xd0,
        0x09, 0xc5, 0x20, 0x36, 0xab, 0x23, 0x09, 0x40, 0x1f, 0x4d, 0x45, 0x96, 0x62, 0xbb, 0x81,
        0xb0, 0x30, 0x72, 0xad, 0x3a, 0x0a, 0xac, 0x31, 0x63, 0x40, 0x52, 0x0a, 0x27, 0xf3, 0x34,
        0xde, 0x27, 0x7d, 0xb7, 0x54, 0xff, 0x0f, 0x9f, 0x5a, 0xfe, 0x07, 0x0f, 0x4e, 0x9f, 0x53,
        0x04, 0x34, 0x62, 0xf4, 0x30, 0x74, 0x83, 0x35, 0xfc, 0xe4, 0x7e, 0xbf, 0x5a, 0xc4, 0x52,
        0xd0, 0xea, 0xf9, 0x61, 0x4e, 0xf5, 0x1c, 0x0e, 0x58, 0x02, 0x71, 0xfb, 0x1f, 0x34, 0x55,
        0xe8, 0x36, 0x70, 0x3c, 0xc1, 0xcb, 0xc9, 0xb7, 0xbb, 0xb5, 0x1c, 0x44, 0x9a, 0x6d, 0x88,
        0x78, 0x98, 0xd4, 0x91, 0x2e, 0xeb, 0x98, 0x81, 0x23, 0x30, 0x73, 0x39, 0x43, 0xd5, 0xbb,
        0x70, 0x39, 0xba, 0x1f, 0xdb, 0x70, 0x9f, 0x91, 0x83, 0x56, 0xc2, 0xde, 0xed, 0x17, 0x6d,
        0x2c, 0x3e, 0x21, 0xea, 0x36, 0xb4, 0x91, 0xd8, 0x31, 0x05, 0x60, 0x90, 0xfd, 0xc6, 0x74,
        0xa9, 0x7b, 0x18, 0xfc, 0x1c, 0x6a, 0x1c, 0x6e, 0xec, 0xd3, 0xc1, 0xc0, 0x0d, 0x11, 0x25,
        0x48, 0x37, 0x3d, 0x45, 0x11, 0xa2, 0x31, 0x14, 0x0a, 0x66, 0x9f, 0xd8, 0xac, 0x74, 0xa2,
        0xcd, 0xc8, 0x79, 0xb3, 0x9e, 0xc6, 0x66, 0x25, 0xcf, 0x2c, 0x87, 0x5e, 0x5c, 0x36, 0x75,
        0x86,
    ];

    //test ECDSA256
    let certificate_ecdsa256 = Certificate::generate_self_signed(vec!["localhost".to_owned()])?;
    let cert_verify_ecdsa256 =
        generate_certificate_verify(&plain_text, &certificate_ecdsa256.private_key)?;
    verify_certificate_verify(
        &plain_text,
        &SignatureHashAlgorithm {
            hash: HashAlgorithm::Sha256,
            signature: SignatureAlgorithm::Ecdsa,
        },
        &cert_verify_ecdsa256,
        &certificate_ecdsa256
            .certificate
            .iter()
            .map(|x| x.as_ref().to_owned())
            .collect::<Vec<Vec<u8>>>(),
        false,
    )?;

    //test ED25519
    let certificate_ed25519 = Certificate::generate_self_signed_with_alg(
        vec!["localhost".to_owned()],
        &rcgen::PKCS_ED25519,
    )?;
    let cert_verify_ed25519 =
        generate_certificate_verify(&plain_text, &certificate_ed25519.private_key)?;
    verify_certificate_verify(
        &plain_text,
        &SignatureHashAlgorithm {
            hash: HashAlgorithm::Sha256,
            signature: SignatureAlgorithm::Ed25519,
        },
        &cert_verify_ed25519,
        &certificate_ed25519
            .certificate
            .iter()
            .map(|x| x.as_ref().to_owned())
            .collect::<Vec<Vec<u8>>>(),
        false,
    )?;

    Ok(())
}

// ECDSA signatures whose hash does not follow the curve of the certificate's key, as (D)TLS 1.2 allows: a P-224
// key signing with SHA-256 (FFmpeg 8 built with GnuTLS), P-384 with SHA-256, P-256 with SHA-384. Made with
// `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:CURVE` and `openssl dgst -HASH -sign`.
const ECDSA_CURVE_MESSAGE: &[u8] = b"server key exchange params";
const P224_SHA256_CERT: &str = concat!(
        "308201603082010ea003020102021470739fade016810b642bafc8d0ef2dbfa6d23f92300a06082a8648ce3d04030230",
        "0f310d300b06035504030c046c617666301e170d3236313230353132333433345a170d3336313230323132333433345a",
        "300f310d300b06035504030c046c617666304e301006072a8648ce3d020106052b81040021033a0004ad8ae3f93496ed",
        "d85bcfd56dfbaa5d025dd2eb17b555768c32645861a81e88ef91d98a5973dc50133deb1fa0cf0d0de534d67228a4b0af",
        "e8a3533051301d0603551d0e04160414fa3343809d3f7af78380d95709483711528151d6301f0603551d230418301680",
        "14fa3343809d3f7af78380d95709483711528151d6300f0603551d130101ff040530030101ff300a06082a8648ce3d04",
        "0302034000303d021d00ea123758505b759219b2b7a9c5aa77f3e9ee6bd70ac39737eb965b2b021c0c865c232115445f",
        "5fce05bb2c3d8737ffd463e6753b720f58d3ee85",
);
const P224_SHA256_SIG: &str = concat!(
        "303d021d00c4e9a63937e0829d86ae80c186bf91f88aa84e4b7a673c11fec845aa021c5703b0e6ef3f74f444a90c936e",
        "ceb73969764c0c285a5475a0db9a93",
);
const P384_SHA256_CERT: &str = concat!(
        "308201b130820136a00302010202143018a672f89b25642dd49553a8408b8c5be0e0c1300a06082a8648ce3d04030230",
        "0f310d300b06035504030c046c617666301e170d3236313230353132333433345a170d3336313230323132333433345a",
        "300f310d300b06035504030c046c6176663076301006072a8648ce3d020106052b81040022036200044b925f89dc4e71",
        "5dce186776cd78de357b49a9a6b14cb26beecc17d404292956b2c8b1f9e303f430ba1fe6ff6b5a2a4a9fe934e85f20b5",
        "2382a634ea50c33bc4cbe756f11570bd78b329b9eba8321a941e6ce935c0532d75cc4d68dda1e243cfa3533051301d06",
        "03551d0e041604148e331c1aeb49ff6f2190e557e4443bd94ab474e0301f0603551d230418301680148e331c1aeb49ff",
        "6f2190e557e4443bd94ab474e0300f0603551d130101ff040530030101ff300a06082a8648ce3d040302036900306602",
        "3100a9845a8a106ee67491d54e52163cac90afb2a04e2be457eab8cc0fcf8f1bf60efd6824e1e543e53d0c73005a3f33",
        "5d8b023100a752f4f39178babad57928547a192b2df4566b09fa091532b9048a2aa464ee4f8840fd8d71e4c5510c157c",
        "3a91f1f444",
);
const P384_SHA256_SIG: &str = concat!(
        "30650231009a116c398f6e22a4326ccb1774bf44c9c39c29c8d671fab3a913401bc734ec5b1d878550411d0e81631bae",
        "c072ad1622023031d43eca42624beb0961abf1e81a53886c583abaf447aa244b398b88d1ecd29c1fd5e1dcb0c0c0d54e",
        "2466de03398ad6",
);
const P256_SHA384_CERT: &str = concat!(
        "3082017230820119a003020102021471b9645b16cda28a5a77519d163ae7decc7e399c300a06082a8648ce3d04030230",
        "0f310d300b06035504030c046c617666301e170d3236313230353132333433345a170d3336313230323132333433345a",
        "300f310d300b06035504030c046c6176663059301306072a8648ce3d020106082a8648ce3d03010703420004d8368532",
        "e87dd224337f010b3d98eeecd5f846e7dfd0b82949892f113a0530150899c47f87fb49316b6f57f8b794ac7e114713fa",
        "0f1c84247810dccae8d10935a3533051301d0603551d0e0416041452068b3ee46785d3d6006e668f2491c0d94aa13b30",
        "1f0603551d2304183016801452068b3ee46785d3d6006e668f2491c0d94aa13b300f0603551d130101ff040530030101",
        "ff300a06082a8648ce3d04030203470030440220066af5ab2902653e81518ea175be6f6838f7e0cf385afc2ae270075a",
        "31b6906802204d6a350dfe911f5621128f376591d009e74c1a651af397f4f84a2b8ad366a8e9",
);
const P256_SHA384_SIG: &str = concat!(
        "304402207cc280ebdf93a1aa2f1d3a69495fed016a9aae3330bc3c180bdc22cc95fe9e2302200f9ca3d7c1f4b10e350f",
        "b193515db7391869718c7a62871bad5f8bc85c4a978b",
);

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn ecdsa_scheme(hash: HashAlgorithm) -> SignatureHashAlgorithm {
    SignatureHashAlgorithm {
        hash,
        signature: SignatureAlgorithm::Ecdsa,
    }
}

fn check_ecdsa_curve_and_hash(cert_hex: &str, sig_hex: &str, hash: HashAlgorithm) -> Result<()> {
    let cert = unhex(cert_hex);
    let sig = unhex(sig_hex);
    let scheme = ecdsa_scheme(hash);
    verify_key_signature(ECDSA_CURVE_MESSAGE, &scheme, &sig, &[cert.clone()], false)?;

    let mut tampered = ECDSA_CURVE_MESSAGE.to_vec();
    tampered[0] ^= 1;
    assert!(verify_key_signature(&tampered, &scheme, &sig, &[cert], false).is_err());
    Ok(())
}

#[test]
fn test_verify_ecdsa_p224_sha256() -> Result<()> {
    check_ecdsa_curve_and_hash(P224_SHA256_CERT, P224_SHA256_SIG, HashAlgorithm::Sha256)
}

#[test]
fn test_verify_ecdsa_p384_sha256() -> Result<()> {
    check_ecdsa_curve_and_hash(P384_SHA256_CERT, P384_SHA256_SIG, HashAlgorithm::Sha256)
}

#[test]
fn test_verify_ecdsa_p256_sha384() -> Result<()> {
    check_ecdsa_curve_and_hash(P256_SHA384_CERT, P256_SHA384_SIG, HashAlgorithm::Sha384)
}

#[test]
fn test_verify_ecdsa_wrong_hash_fails() -> Result<()> {
    let cert = unhex(P224_SHA256_CERT);
    let sig = unhex(P224_SHA256_SIG);
    let scheme = ecdsa_scheme(HashAlgorithm::Sha384);
    assert!(verify_key_signature(ECDSA_CURVE_MESSAGE, &scheme, &sig, &[cert], false).is_err());
    Ok(())
}

