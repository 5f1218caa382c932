//! Single integration-test binary (Cargo.toml sets `autotests = false`):
//! every integration-test module is declared here so the suite links once.

mod agent;
mod attacks;
mod causes;
mod churn;
mod config_bounds;
mod e2e;
mod fanotify;
mod fanout;
mod faults_control;
mod faults_recover;
mod faults_root;
mod faults_signals;
mod fixtures;
mod fulllive;
mod hostile;
mod instance;
mod layers;
mod links;
mod logs;
mod longpath;
mod mirrors_lag;
mod mirrors_verify;
mod moves;
mod outsider_a;
mod outsider_b;
mod package;
mod remotes;
mod scale;
mod scenarios;
mod security;
mod support;
mod trust;
mod warm;
