"""The trip booking sample: a saga module with parallel bookings, an approval above a threshold
and a payment; four workers on the SDK (flight, hotel, car, trip_payment), a CLI plug-in and a
demo part."""
