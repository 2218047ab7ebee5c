//! Results on their way to the control plane: findings as evidence records
//! ([`evidence`]) and the durable outbox that holds them until the control
//! plane confirms them ([`outbox`]).

pub mod evidence;
pub mod outbox;
