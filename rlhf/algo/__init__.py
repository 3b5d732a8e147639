"""Pure tensor math of every algorithm: KL, rewards, advantages, losses. Each function cites its source."""
