pub mod influxd;
