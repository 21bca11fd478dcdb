//! The STUN/TURN messages the TURN client speaks, on top of `stun_codec`:
//! the attribute set, encoding and decoding, and long-term-credential
//! signing. Kept apart from the state machine so the fake servers of the
//! tests build their answers with exactly the same code paths.

use std::fmt;

use bytecodec::{DecodeExt, EncodeExt};
use stun_codec::define_attribute_enums;
use stun_codec::rfc5389::attributes::{
    AlternateServer, ErrorCode, Fingerprint, MappedAddress, MessageIntegrity, Nonce, Realm,
    Software, UnknownAttributes, Username, XorMappedAddress,
};
use stun_codec::rfc5766::attributes::{
    ChannelNumber, Data, DontFragment, EvenPort, Lifetime, RequestedTransport, ReservationToken,
    XorPeerAddress, XorRelayAddress,
};
use stun_codec::{Attribute as _, Message, MessageDecoder, MessageEncoder};

define_attribute_enums!(
    Attr,
    AttrDecoder,
    AttrEncoder,
    [
        // RFC 8489 (5389)
        MappedAddress,
        Username,
        MessageIntegrity,
        ErrorCode,
        UnknownAttributes,
        Realm,
        Nonce,
        XorMappedAddress,
        Software,
        AlternateServer,
        Fingerprint,
        // RFC 8656 (5766)
        ChannelNumber,
        Lifetime,
        XorPeerAddress,
        Data,
        XorRelayAddress,
        EvenPort,
        RequestedTransport,
        DontFragment,
        ReservationToken
    ]
);

/// One STUN message of our attribute set.
pub type Msg = Message<Attr>;

/// The long-term credential a request was signed with, kept with the
/// transaction: the answer is signed with the same key even if the caller
/// has updated the credentials since.
#[derive(Clone)]
pub struct Key {
    pub username: Username,
    pub realm: Realm,
    pub password: String,
}

impl fmt::Debug for Key {
    // The password is a secret; the username and realm are not.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("username", &self.username.name())
            .field("realm", &self.realm.text())
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why a message could not be encoded (a value out of STUN's ranges).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a STUN message could not be encoded: {0}")]
pub struct EncodeError(pub String);

fn encode_error(e: bytecodec::Error) -> EncodeError {
    // bytecodec's display carries a tracking history; its kind is enough.
    EncodeError(format!("{:?}", e.kind()))
}

/// Appends USERNAME, REALM, NONCE and MESSAGE-INTEGRITY (when `key` is
/// given), then FINGERPRINT, and encodes.
pub fn sign_and_encode(
    mut message: Msg,
    key: Option<(&Key, &Nonce)>,
) -> Result<Vec<u8>, EncodeError> {
    if let Some((key, nonce)) = key {
        message.add_attribute(key.username.clone());
        message.add_attribute(key.realm.clone());
        message.add_attribute(nonce.clone());
        let mi = MessageIntegrity::new_long_term_credential(
            &message,
            &key.username,
            &key.realm,
            &key.password,
        )
        .map_err(encode_error)?;
        message.add_attribute(mi);
    }
    let fingerprint = Fingerprint::new(&message).map_err(encode_error)?;
    message.add_attribute(fingerprint);
    MessageEncoder::new()
        .encode_into_bytes(message)
        .map_err(encode_error)
}

/// Why a STUN-shaped datagram is not a usable message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The header or an attribute's framing is wrong.
    Undecodable,
    /// The framing is right but an attribute's value is not (bad address
    /// family, wrong FINGERPRINT, a value out of range).
    BrokenAttribute,
}

/// Decodes one whole STUN message.
pub fn decode(bytes: &[u8]) -> Result<Msg, DecodeError> {
    match MessageDecoder::<Attr>::new().decode_from_bytes(bytes) {
        Ok(Ok(message)) => Ok(message),
        Ok(Err(_broken)) => Err(DecodeError::BrokenAttribute),
        Err(_) => Err(DecodeError::Undecodable),
    }
}

/// The first comprehension-required attribute we don't know, if any: a
/// response carrying one must not be acted on (RFC 8489 §7.3.3).
pub fn unknown_required(message: &Msg) -> Option<u16> {
    message
        .unknown_attributes()
        .map(|a| a.get_type())
        .find(|t| t.is_comprehension_required())
        .map(|t| t.as_u16())
}
