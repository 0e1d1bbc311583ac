use super::*;

// Captured from HAProxy 2.6.12 (Debian bookworm) answering one `;`-joined line.
const MIXED: &str = "no need to change the addr, port changed from '1' to '19001' by 'stats socket command'\n\n\n\nNo such server.\n\nUnknown command, but maybe one of the following ones is a better match:\n  show fd [num]                           : dump list of file descriptors\n  quit                                    : disconnect\n\nno need to change the addr, no need to change the port by 'stats socket command'\n\n\nAbsolute weight can only be between 0 and 256 inclusive.\n\n";

#[test]
fn answers_split_one_per_command() {
    let answers = split_answers(MIXED);
    assert_eq!(answers.len(), 8, "{answers:#?}");
    assert!(answers[0].starts_with("no need to change the addr"));
    assert_eq!((answers[1].as_str(), answers[2].as_str()), ("", ""));
    assert_eq!(answers[3], "No such server.");
    assert!(answers[4].starts_with("Unknown command") && answers[4].ends_with("disconnect"));
    assert_eq!(answers[6], "");
    assert!(answers[7].starts_with("Absolute weight"));
}

fn s1() -> Slot {
    Slot(1)
}

#[test]
fn commands_are_built_in_haproxy_syntax() {
    let addr: IpAddr = "172.18.0.5".parse().unwrap();
    let line = join(&[
        Command::set_addr(s1(), addr, 8080),
        Command::set_weight(s1(), 0).unwrap(),
        Command::set_state(s1(), AdminState::Ready),
        Command::set_state(Slot(2), AdminState::Drain),
        Command::set_state(Slot(3), AdminState::Maint),
        Command::enable_health(s1()),
    ]);
    assert_eq!(
        line,
        "set server app/s1 addr 172.18.0.5 port 8080;set weight app/s1 0;\
         set server app/s1 state ready;set server app/s2 state drain;\
         set server app/s3 state maint;enable health app/s1"
    );
    assert!(Command::set_weight(s1(), 257).is_err());
    assert!(Command::raw("show info;shutdown sessions server app/s1").is_err());
    assert!(Command::raw("show info\nshutdown frontend https").is_err());
    assert_eq!(Command::raw("show info").unwrap().as_str(), "show info");
}

#[test]
fn the_first_failed_command_is_an_error_with_haproxys_text() {
    let commands = [
        Command::set_addr(s1(), "127.0.0.1".parse().unwrap(), 19001),
        Command::set_weight(s1(), 0).unwrap(),
        Command::set_state(s1(), AdminState::Ready),
        Command::set_state(Slot(9), AdminState::Ready),
    ];
    let e = check_answers(&commands, MIXED).unwrap_err().to_string();
    assert_eq!(
        e,
        "HAProxy refused `set server app/s9 state ready`: No such server."
    );
    let ok = "IP changed from '127.0.0.1' to '172.18.0.5', port changed from '1' to '8080' by 'stats socket command'\n\n\n\n";
    assert_eq!(check_answers(&commands[..3], ok).unwrap().len(), 3);
    let short = check_answers(&commands, ok).unwrap_err().to_string();
    assert!(short.contains("answered 3 of 4"), "{short}");
}

const STAT: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_connections,h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out,
app,s1,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,0,1,0,1,1,0,0,,1,3,1,,0,,2,0,,0,L4CON,,0,0,0,0,0,0,0,,,,0,0,0,,,,,-1,Connection refused,,0,0,0,0,,,,Layer4 connection problem,,2,2,0,,,,127.0.0.1:19001,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,0,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
app,s2,0,0,0,0,,0,0,0,,0,,0,0,0,0,MAINT,1,1,0,0,0,1,1,,1,3,2,,0,,2,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,,,,,,,,,127.0.0.1:1,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,0,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
app,s3,0,0,2,5,,1200,0,0,,0,,3,0,0,0,UP 1/2,9,1,0,4,1,7,0,,1,3,3,,1190,,2,0,,0,L7OK,200,1,0,1180,0,15,5,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,Layer7 check passed,,2,2,2,,,,172.18.0.5:8080,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,0,9,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
app,BACKEND,0,0,0,0,410,0,0,0,0,0,,0,0,0,0,UP,0,0,0,,0,1,,,1,3,0,,0,,1,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,0,0,0,0,-1,,,0,0,0,0,,,,,,,,,,,,,,http,roundrobin,,,,,,,0,0,0,0,0,,,0,0,0,0,0,,,,,1,0,0,0,,,,,,,,,,,,,,,,,,,,,,,
";

#[test]
fn show_stat_rows_become_typed_servers() {
    let servers = parse_show_stat(STAT).unwrap();
    assert_eq!(servers.len(), 3, "the BACKEND row is not a server");
    let s1 = &servers[0];
    assert_eq!(s1.slot, Some(Slot(1)));
    assert_eq!(s1.addr, "127.0.0.1:19001");
    assert_eq!(s1.status, ServerStatus::Down);
    assert_eq!((s1.weight, s1.user_weight), (0, 0));
    assert_eq!(s1.check_status, "L4CON");
    assert_eq!(s1.check_code, None);
    assert_eq!(s1.check_failures, 1);
    assert_eq!(s1.check_desc, "Layer4 connection problem");
    assert_eq!(servers[1].status, ServerStatus::Maint);
    let s3 = &servers[2];
    assert_eq!(s3.status, ServerStatus::GoingDown("1/2".into()));
    assert!(s3.status.takes_traffic());
    assert_eq!((s3.weight, s3.check_code), (9, Some(200)));
    assert_eq!((s3.current_sessions, s3.total_sessions), (2, 1200));
    assert_eq!((s3.hrsp_2xx, s3.hrsp_4xx, s3.hrsp_5xx), (1180, 15, 5));
    assert_eq!((s3.selected_total, s3.connect_errors), (1190, 3));
    assert_eq!(s3.last_change_seconds, 7);
    assert!(!s1.check_running && !s3.check_running);
}

#[test]
fn a_check_under_way_is_marked_and_its_cleared_code_is_no_code() {
    // What a fresh-clone run saw: `* L7STS` with code 0 while the next check ran.
    let running = STAT.replacen("L4CON,,", "* L7STS,0,", 1);
    let s1 = &parse_show_stat(&running).unwrap()[0];
    assert_eq!(s1.check_status, "L7STS");
    assert!(s1.check_running);
    assert_eq!(s1.check_code, None);
}

#[test]
fn statuses_cover_haproxys_words() {
    assert_eq!(
        ServerStatus::parse("DOWN 1/2"),
        ServerStatus::GoingUp("1/2".into())
    );
    assert_eq!(ServerStatus::parse("MAINT (via)"), ServerStatus::Maint);
    assert_eq!(ServerStatus::parse("DRAIN (agent)"), ServerStatus::Drain);
    assert!(!ServerStatus::parse("DRAIN").takes_traffic());
    assert!(parse_show_stat("no header").is_err());
}

#[test]
fn exporter_counters_sum_per_server() {
    let text = "# TYPE haproxy_server_http_responses_total counter\n\
        haproxy_server_http_responses_total{proxy=\"app\",server=\"s1\",code=\"2xx\"} 90\n\
        haproxy_server_http_responses_total{proxy=\"app\",server=\"s1\",code=\"5xx\"} 2\n\
        haproxy_server_http_responses_total{proxy=\"app\",server=\"s2\",code=\"2xx\"} 10\n\
        haproxy_server_http_responses_total{proxy=\"other\",server=\"s2\",code=\"2xx\"} 1000\n\
        haproxy_server_http_responses_total_x{proxy=\"app\",server=\"s2\",code=\"2xx\"} 1000\n";
    let sums = exporter_per_server(text, "haproxy_server_http_responses_total");
    assert_eq!(sums.get("s1"), Some(&92.0));
    assert_eq!(sums.get("s2"), Some(&10.0));
}
