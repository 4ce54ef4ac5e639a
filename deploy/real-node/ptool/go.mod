module poiesis/ptool

go 1.22
