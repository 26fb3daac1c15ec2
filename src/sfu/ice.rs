//! ICE after the offer: trickled remote candidates (PATCH, capped per session), ICE restarts (PATCH with new
//! credentials), and the answer with our candidates that every negotiation, first or restart, ends with.

use std::sync::Arc;
use std::time::Duration;

use webrtc::ice_transport::ice_candidate::RTCIceCandidateInit;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;

use super::host_addresses::HostAddresses;
use super::sdpfrag::{self, SdpFrag};
use super::session::Session;
use super::{Sfu, SfuError};

impl Sfu {
    /// Applies a trickle fragment: adds the remote candidates, on the session's media thread, up to
    /// `media.max_remote_candidates` per session, the offer's included (ICE-lite needs none to work: the client's
    /// checks reach us).
    pub async fn trickle(&self, session: &Arc<Session>, frag: &SdpFrag) -> Result<(), SfuError> {
        let max = self.inner.config.max_remote_candidates;
        if !session.take_remote_candidates(frag.candidates.len(), max) {
            metrics::counter!("zipiq_remote_candidates_refused_total")
                .increment(frag.candidates.len() as u64);
            return Err(SfuError::TrickleCandidates { max });
        }
        let inits: Vec<RTCIceCandidateInit> = frag
            .candidates
            .iter()
            .map(|c| RTCIceCandidateInit {
                candidate: c.candidate.clone(),
                sdp_mid: c.mid.clone(),
                sdp_mline_index: c.m_line_index,
                username_fragment: None,
            })
            .collect();
        let target = session.clone();
        self.on_session_thread(session, async move {
            for init in inits {
                if target.is_ended() {
                    break;
                }
                if let Err(e) = target.pc.add_ice_candidate(init).await {
                    // An unusable candidate (mDNS name, unknown transport) is not the client's fault under
                    // ICE-lite, which never uses remote candidates to send checks.
                    tracing::debug!(session = %target.log_id(), error = %e, "ignored a remote candidate");
                }
            }
            Ok(())
        })
        .await
    }

    /// Restarts ICE with the client's new credentials and returns our new fragment, on the session's media
    /// thread. A failure leaves the session as it was.
    pub async fn restart_ice(
        &self,
        session: &Arc<Session>,
        frag: &SdpFrag,
    ) -> Result<String, SfuError> {
        let (Some(ufrag), Some(pwd)) = (frag.ice_ufrag.clone(), frag.ice_pwd.clone()) else {
            return Err(SfuError::Negotiation(
                "an ICE restart needs a=ice-ufrag and a=ice-pwd".into(),
            ));
        };
        let target = session.clone();
        let addresses = self.inner.engine.addresses().clone();
        self.on_session_thread(session, async move {
            restart_ice_here(&target, &ufrag, &pwd, &addresses).await
        })
        .await
    }
}

/// The ICE restart itself, on the session's media thread.
async fn restart_ice_here(
    session: &Session,
    ufrag: &str,
    pwd: &str,
    addresses: &HostAddresses,
) -> Result<String, SfuError> {
    let _guard = session.restart_lock.lock().await;
    let old_offer = session.remote_offer();
    let new_offer = replace_ice_credentials(&old_offer, ufrag, pwd);
    let answer = answer_with_candidates(&session.pc, &new_offer, addresses).await?;
    session.set_remote_offer(new_offer);
    let (ufrag, pwd, candidates) = ice_details(&answer);
    Ok(sdpfrag::write_restart_answer(
        &ufrag,
        &pwd,
        &session.mids,
        &candidates,
    ))
}

/// Replaces every `a=ice-ufrag` / `a=ice-pwd` line of an SDP.
fn replace_ice_credentials(sdp: &str, ufrag: &str, pwd: &str) -> String {
    sdp.split_inclusive('\n')
        .map(|line| {
            let eol = if line.ends_with("\r\n") {
                "\r\n"
            } else if line.ends_with('\n') {
                "\n"
            } else {
                ""
            };
            if line.starts_with("a=ice-ufrag:") {
                format!("a=ice-ufrag:{ufrag}{eol}")
            } else if line.starts_with("a=ice-pwd:") {
                format!("a=ice-pwd:{pwd}{eol}")
            } else {
                line.to_owned()
            }
        })
        .collect()
}

/// Our ICE ufrag, pwd and candidates from a local description.
fn ice_details(sdp: &str) -> (String, String, Vec<String>) {
    let mut ufrag = String::new();
    let mut pwd = String::new();
    let mut candidates = Vec::new();
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
            if ufrag.is_empty() {
                ufrag = v.to_owned();
            }
        } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
            if pwd.is_empty() {
                pwd = v.to_owned();
            }
        } else if let Some(v) = line.strip_prefix("a=")
            && v.starts_with("candidate:")
            && !candidates.iter().any(|c: &String| c == v)
        {
            candidates.push(v.to_owned());
        }
    }
    (ufrag, pwd, candidates)
}

/// Waits for ICE gathering after `set_local_description` and returns the local SDP with every candidate.
pub(crate) async fn answer_with_candidates(
    pc: &Arc<RTCPeerConnection>,
    offer_sdp: &str,
    addresses: &HostAddresses,
) -> Result<String, SfuError> {
    let offer = RTCSessionDescription::offer(offer_sdp.to_owned())
        .map_err(|e| SfuError::Negotiation(e.to_string()))?;
    pc.set_remote_description(offer)
        .await
        .map_err(|e| SfuError::Negotiation(e.to_string()))?;
    let answer = pc
        .create_answer(None)
        .await
        .map_err(|e| SfuError::Negotiation(e.to_string()))?;
    let mut gathered = pc.gathering_complete_promise().await;
    pc.set_local_description(answer)
        .await
        .map_err(|e| SfuError::Negotiation(e.to_string()))?;
    // Host candidates on the shared socket are known at once; the timeout only guards against a stuck gatherer.
    let _ = tokio::time::timeout(Duration::from_secs(5), gathered.recv()).await;
    let local = pc
        .local_description()
        .await
        .ok_or_else(|| SfuError::Internal("no local description".into()))?;
    Ok(addresses.announce(&local.sdp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_credentials_are_replaced_everywhere() {
        let sdp = "v=0\r\na=ice-ufrag:old\r\na=ice-pwd:oldpwd\r\nm=audio 9 x 0\r\na=ice-ufrag:old\r\na=ice-pwd:oldpwd\r\n";
        let out = replace_ice_credentials(sdp, "new", "newpwd");
        assert_eq!(out.matches("a=ice-ufrag:new\r\n").count(), 2);
        assert_eq!(out.matches("a=ice-pwd:newpwd\r\n").count(), 2);
        assert!(!out.contains("old"));
    }

    #[test]
    fn ice_details_reads_first_credentials_and_unique_candidates() {
        let sdp = "a=ice-ufrag:u1\r\na=ice-pwd:p1\r\na=candidate:1 1 udp 1 1.2.3.4 5 typ host\r\na=ice-ufrag:u2\r\na=candidate:1 1 udp 1 1.2.3.4 5 typ host\r\n";
        let (u, p, c) = ice_details(sdp);
        assert_eq!((u.as_str(), p.as_str()), ("u1", "p1"));
        assert_eq!(c.len(), 1);
    }
}
