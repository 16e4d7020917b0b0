//! Arrow -> OTLP protobuf / JSON.

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("json: {0}")]
    Json(String),
}

pub fn encode(_payload: &crate::Payload, _out: &mut Vec<u8>) {}
pub fn encode_to_vec(payload: &crate::Payload) -> Vec<u8> {
    let mut v = Vec::new();
    encode(payload, &mut v);
    v
}
pub fn encode_json(_payload: &crate::Payload) -> Result<Vec<u8>, EncodeError> {
    Ok(Vec::new())
}
