use super::*;

#[test]
fn slots_are_zeroed_and_whole_cache_lines() {
    assert_eq!(size_of::<Slot>() % 64, 0);
    let board = Scoreboard::new(4).unwrap();
    assert_eq!(board.slot(3).requests(), 0);
    board.slot(1).request_finished();
    assert_eq!(board.slot(1).requests(), 1);
    assert_eq!(board.slot(0).requests(), 0);
}

#[test]
fn the_request_line_in_hand_is_kept_cut_to_fit() {
    let board = Scoreboard::new(1).unwrap();
    board.slot(0).set_request_line(b"GET /sleep?ms=60000");
    assert_eq!(board.slot(0).request_line(), "GET /sleep?ms=60000");
    let mut long = b"POST ".to_vec();
    long.extend_from_slice(&[b'a'; 500]);
    board.slot(0).set_request_line(&long);
    let line = board.slot(0).request_line();
    assert_eq!(line.len(), REQUEST_LINE_BYTES);
    assert!(line.starts_with("POST aaa"), "{line}");
}

#[test]
fn peers_see_a_less_loaded_worker_that_takes_work() {
    let board = Scoreboard::new(4).unwrap();
    for i in 0..3 {
        board.note_in_use(i);
        board.slot(i).set_pid(100 + i as i32);
    }
    let me = board.peers(0);
    board.slot(0).call_started();
    board.slot(1).call_started();
    assert_eq!(
        me.least_loaded_below(1, usize::MAX),
        None,
        "nobody takes work yet"
    );
    board.slot(2).set_taking(true);
    assert_eq!(
        me.least_loaded_below(1, usize::MAX),
        Some(2),
        "slot 2 takes work and holds none"
    );
    board.slot(2).call_started();
    assert_eq!(me.least_loaded_below(1, usize::MAX), None);
    board.slot(1).set_taking(true);
    assert_eq!(
        me.least_loaded_below(2, usize::MAX),
        Some(1),
        "1 call, fewer connections"
    );
    board.slot(2).clear();
    assert_eq!(
        me.least_loaded_below(2, usize::MAX),
        Some(1),
        "a cleared slot is nobody"
    );
    board.slot(1).set_connections(3);
    assert_eq!(
        me.least_loaded_below(2, 3),
        None,
        "holds as many connections"
    );
    board.slot(1).start_sending();
    assert_eq!(
        me.least_loaded_below(2, usize::MAX),
        None,
        "one call, one on its way"
    );
}

#[test]
fn a_sender_sees_the_worker_stop_or_the_worker_sees_the_sender() {
    let board = Scoreboard::new(1).unwrap();
    let slot = board.slot(0);
    slot.set_pid(100);
    slot.set_taking(true);
    assert!(slot.start_sending());
    assert_eq!(slot.queued(), 1, "the worker waits for what is sent");
    slot.took_one();
    assert_eq!(slot.queued(), 0);
    slot.took_one();
    assert_eq!(slot.queued(), 0, "never below zero");
    slot.set_taking(false);
    assert!(
        !slot.start_sending(),
        "a worker that stopped is not sent to"
    );
    slot.unsend();
    assert_eq!(slot.queued(), 0);
}

#[test]
fn a_new_connection_is_left_to_a_free_worker_holding_fewer() {
    let board = Scoreboard::new(3).unwrap();
    for i in 0..3 {
        board.note_in_use(i);
        board.slot(i).set_pid(100 + i as i32);
        board.slot(i).set_taking(true);
    }
    let me = board.peers(0);
    board.slot(1).set_connections(2);
    board.slot(2).set_connections(1);
    assert_eq!(me.free_one_with_fewer_connections(1), None);
    assert_eq!(
        me.free_one_with_fewer_connections(3),
        Some(2),
        "the one holding the fewest"
    );
    board.slot(2).start_sending();
    board.slot(2).start_sending();
    assert_eq!(
        me.free_one_with_fewer_connections(3),
        Some(1),
        "connections on their way count as held"
    );
    board.slot(1).call_started();
    assert_eq!(
        me.free_one_with_fewer_connections(3),
        None,
        "in a call, or holding too many"
    );
}
