//! Push: registrations of every protocol, matching, delivery to the stand-ins, the notifications page, watched relays.

mod browser;
mod choices;
mod delivery;
mod marmot;
mod nip97;
mod nip9a;
mod notifications;
mod notifications_page;
mod registration;
mod upstream;
