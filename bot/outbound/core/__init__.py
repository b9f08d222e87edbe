"""Pure parts of outbound calling: campaign rules and the Twilio call request."""
